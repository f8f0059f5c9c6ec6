"""Domain event delivery: outbox relay, Redis stream transport, embedded dispatch."""

from arcana.adapters.events.bus import EventBus

__all__ = ["EventBus"]
