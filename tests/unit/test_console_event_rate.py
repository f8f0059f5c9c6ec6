"""The overview's events-per-minute window."""

from __future__ import annotations

from arcana.api.admin_overview import EventRate
from arcana.domain.events import DomainEvent


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _events(n: int) -> list[DomainEvent]:
    return [DomainEvent("product.created", {"productId": str(i)}) for i in range(n)]


def test_counts_the_events_of_the_last_minute_only() -> None:
    clock = Clock()
    rate = EventRate(clock)
    rate.record(_events(2))
    rate.record(_events(1))
    clock.now += 30
    rate.record(_events(4))
    rate.record([])
    assert rate.per_minute() == 7
    clock.now += 31  # the first three are now more than a minute old
    assert rate.per_minute() == 4
    clock.now += 60
    assert rate.per_minute() == 0
