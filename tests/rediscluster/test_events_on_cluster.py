"""Event stream, consumer group and dead letters on the real Redis Cluster: the tests of
tests/integration/test_events_consumers.py, run against the cluster."""

from __future__ import annotations

from tests.integration.test_events_consumers import (
    bus_container,
    bus_process,
    test_consumer_dying_mid_handling_is_taken_over_and_effect_happens_once,
    test_duplicate_entries_of_one_event_run_the_handlers_once,
    test_entries_added_before_the_group_existed_are_delivered,
    test_malformed_entry_goes_straight_to_the_dead_stream,
    test_one_consumer_handles_each_aggregates_events_in_commit_order,
    test_poison_event_is_retried_then_dead_lettered,
    test_registered_user_gets_one_welcome_job_through_relay_and_consumer,
)

__all__ = [
    "bus_container",
    "bus_process",
    "test_consumer_dying_mid_handling_is_taken_over_and_effect_happens_once",
    "test_duplicate_entries_of_one_event_run_the_handlers_once",
    "test_entries_added_before_the_group_existed_are_delivered",
    "test_malformed_entry_goes_straight_to_the_dead_stream",
    "test_one_consumer_handles_each_aggregates_events_in_commit_order",
    "test_poison_event_is_retried_then_dead_lettered",
    "test_registered_user_gets_one_welcome_job_through_relay_and_consumer",
]
