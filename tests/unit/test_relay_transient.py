"""Which delivery errors the outbox relay retries forever (outages) and which count towards
``ARCANA_EVENTS_MAX_DELIVERIES``. redis-py's are told from the loaded modules, not imported."""

from __future__ import annotations

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from arcana.adapters.events.relay import is_transient
from arcana.errors import ServiceUnavailable


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (RedisConnectionError("refused"), True),
        (RedisTimeoutError("slow"), True),
        (ServiceUnavailable("database down"), True),
        (ResponseError("WRONGTYPE"), False),
        (ValueError("bad row"), False),
    ],
)
def test_outages_are_transient_and_refusals_are_not(error: Exception, transient: bool) -> None:
    assert is_transient(error) is transient
