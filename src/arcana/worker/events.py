"""Background loops of event delivery: the outbox relay (every process) and the Redis
consumer-group members (``arcana worker`` / ``serve --with-worker``)."""

from __future__ import annotations

import logging

from arcana.bootstrap import Container
from arcana.domain.events import DomainEvent

log = logging.getLogger(__name__)


def start_relay(container: Container) -> None:
    """Run this process's outbox relay, woken by every commit of this process. Idempotent."""
    bus = container.events
    if bus.relay_started:
        return
    bus.relay_started = True
    relay = bus.relay

    def wake(_events: list[DomainEvent]) -> None:
        relay.wake()

    container.on_commit(wake)
    container.spawn("outbox-relay", relay.run)


def start_consumers(container: Container, count: int = 1) -> None:
    """Members of consumer group ``arcana`` (Redis mode). Embedded mode needs none: the relay
    dispatches to the handlers itself."""
    bus = container.events
    if bus.embedded:
        return
    for i in range(count):
        container.spawn(f"event-consumer-{i}", bus.consumer().run)
    log.info("event consumers started", extra={"count": count, "stream": bus.stream})


def stop_streams(container: Container) -> None:
    """End live event streams (SSE) so the HTTP server can shut down without waiting."""
    container.events.close_streams()
