"""Runs the audit plugins beside every API process."""

from __future__ import annotations

from arcana.bootstrap import Container


def start_audit_plugins(container: Container) -> None:
    """Load the plugins and start the threads that run them on emitted audit events."""
    container.spawn("audit-plugins", container.audit_sink.run)
    container.spawn("plugin-reload-follower", container.plugins.follow_reloads)
