"""The operator views over a partitioned queue on the cluster: the admin job routes (enqueue,
get by id, lists, unique keys, retry of a dead job) and ``arcana jobs`` underneath them see
every partition."""

from __future__ import annotations

from pathlib import Path

import pytest

from arcana.config import Settings
from tests.conftest import backend_settings
from tests.e2e.test_admin_jobs import (
    test_enqueue_get_list,
    test_retry_only_dead_jobs,
    test_unique_key_held_answers_200_with_the_existing_job,
)

pytestmark = pytest.mark.usefixtures("seeded_principals")

__all__ = [
    "test_enqueue_get_list",
    "test_retry_only_dead_jobs",
    "test_unique_key_held_answers_200_with_the_existing_job",
]


@pytest.fixture
def settings(tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    plain = backend_settings("cluster", tmp_path, request)
    return plain.replace(queue_partitions=3, events_partitions=3)
