"""Services-mode HTTP flows on the real Redis Cluster: login limiter, token generations,
product cache, admin jobs and the SSE event stream (tests shared with tests/e2e/)."""

from __future__ import annotations

import pytest

from tests.app_support import make_client
from tests.e2e.test_admin_jobs import (
    test_enqueue_get_list,
    test_retry_only_dead_jobs,
    test_unique_key_held_answers_200_with_the_existing_job,
)
from tests.e2e.test_auth_abuse import (
    test_account_lock_answers_429_even_to_the_right_password,
    test_address_limit,
    test_success_clears_the_account_count,
)
from tests.e2e.test_auth_http import (
    test_change_password,
    test_logout_all_kills_older_tokens_and_not_newer,
    test_sessions_list_and_delete,
)
from tests.e2e.test_events_sse import server, test_committed_event_arrives_as_a_server_sent_event
from tests.e2e.test_products_http import (
    test_cache_metrics,
    test_patch_partial_and_status,
    test_stock_endpoint,
)

pytestmark = pytest.mark.usefixtures("seeded_principals")

__all__ = [
    "make_client",
    "server",
    "test_account_lock_answers_429_even_to_the_right_password",
    "test_address_limit",
    "test_cache_metrics",
    "test_change_password",
    "test_committed_event_arrives_as_a_server_sent_event",
    "test_enqueue_get_list",
    "test_logout_all_kills_older_tokens_and_not_newer",
    "test_patch_partial_and_status",
    "test_retry_only_dead_jobs",
    "test_sessions_list_and_delete",
    "test_stock_endpoint",
    "test_success_clears_the_account_count",
    "test_unique_key_held_answers_200_with_the_existing_job",
]
