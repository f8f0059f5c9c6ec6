"""The Redis job queue protocol and the worker on the real Redis Cluster: the same tests as
tests/integration/test_jobqueue.py and test_job_worker.py, run against the cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from arcana.config import Settings
from tests.integration.test_job_worker import (
    test_echo_canary_dead_letter_then_retry_from_dead,
    test_echo_canary_retries_then_succeeds,
    test_priorities_run_first_on_a_busy_worker,
)
from tests.integration.test_jobqueue import (
    qc,
    queue,
    test_delayed_job_waits_for_its_time,
    test_enqueue_many_and_batch_fetch,
    test_expired_lease_is_reaped_and_stale_worker_cannot_ack,
    test_failure_retries_with_backoff_then_dead_then_retry_from_dead,
    test_heartbeat_extends_the_lease,
    test_job_id_makes_enqueue_idempotent,
    test_list_by_status_with_paging,
    test_priority_order_then_fifo,
    test_release_puts_jobs_back_in_their_place,
    test_three_schedulers_enqueue_each_period_once,
    test_unique_key_deduplicates_while_active,
    test_unique_key_frees_when_dead,
)
from tests.jobs_support import queue_settings

__all__ = [
    "qc",
    "queue",
    "test_delayed_job_waits_for_its_time",
    "test_echo_canary_dead_letter_then_retry_from_dead",
    "test_echo_canary_retries_then_succeeds",
    "test_enqueue_many_and_batch_fetch",
    "test_expired_lease_is_reaped_and_stale_worker_cannot_ack",
    "test_failure_retries_with_backoff_then_dead_then_retry_from_dead",
    "test_heartbeat_extends_the_lease",
    "test_job_id_makes_enqueue_idempotent",
    "test_list_by_status_with_paging",
    "test_priorities_run_first_on_a_busy_worker",
    "test_priority_order_then_fifo",
    "test_release_puts_jobs_back_in_their_place",
    "test_three_schedulers_enqueue_each_period_once",
    "test_unique_key_deduplicates_while_active",
    "test_unique_key_frees_when_dead",
]


@pytest.fixture
def qsettings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    return queue_settings(request, "rediscluster", tmp_path, job_poll_interval=0.05)
