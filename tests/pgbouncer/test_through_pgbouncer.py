"""Services-mode flows with PostgreSQL behind PgBouncer in transaction mode: auth, products,
the outbox relay (LISTEN over the direct URL) and the HTTP flows, from tests/e2e/."""

from __future__ import annotations

import pytest

from arcana.bootstrap import App
from tests.e2e.test_auth_http import (
    test_change_password,
    test_login_returns_token_pair_and_audits,
    test_logout_all_kills_older_tokens_and_not_newer,
    test_refresh_rotates_and_reuse_revokes_only_that_family,
    test_register_returns_user_and_records_event,
    test_sessions_list_and_delete,
)
from tests.e2e.test_flows import (
    running,
    test_forgot_password_mail_carries_a_token_that_resets_the_password,
    test_low_stock_alerts_every_admin,
    test_registration_sends_exactly_one_welcome_mail,
)
from tests.e2e.test_products_http import (
    test_create_get_shape,
    test_list_filters_and_order,
    test_patch_partial_and_status,
    test_stock_endpoint,
    test_stock_events_in_outbox,
)

pytestmark = pytest.mark.usefixtures("seeded_principals")

__all__ = [
    "running",
    "test_change_password",
    "test_create_get_shape",
    "test_forgot_password_mail_carries_a_token_that_resets_the_password",
    "test_list_filters_and_order",
    "test_login_returns_token_pair_and_audits",
    "test_logout_all_kills_older_tokens_and_not_newer",
    "test_low_stock_alerts_every_admin",
    "test_patch_partial_and_status",
    "test_refresh_rotates_and_reuse_revokes_only_that_family",
    "test_register_returns_user_and_records_event",
    "test_registration_sends_exactly_one_welcome_mail",
    "test_sessions_list_and_delete",
    "test_stock_endpoint",
    "test_stock_events_in_outbox",
]


async def test_the_engine_goes_through_pgbouncer(container: App) -> None:
    assert container.db.pooled
    assert container.db.url != container.db.direct_url
    assert await container.db.ping()
