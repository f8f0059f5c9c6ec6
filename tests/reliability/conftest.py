"""Fixtures of the reliability suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.reliability.support import EmbeddedServer


@pytest.fixture(scope="session")
def embedded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """One ``arcana serve`` (embedded mode, fresh directory, an admin logged in) shared by the
    hostile-input tests. Failed logins sent by the fuzzer must not lock the test's address out."""
    srv = EmbeddedServer(
        tmp_path_factory.mktemp("embedded-server"),
        ARCANA_LOGIN_MAX_FAILURES_PER_IP="100000",
        ARCANA_REGISTER_LIMIT_PER_IP="1000000",
        ARCANA_RESET_LIMIT_PER_IP="1000000",
    ).start()
    try:
        yield srv
    finally:
        assert srv.stop() == 0, srv.proc.log()
