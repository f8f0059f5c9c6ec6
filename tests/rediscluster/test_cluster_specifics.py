"""What only a cluster shows: the client type, sharded pub/sub for plugin reloads, and the
live event channels (plain PUBLISH) reaching a listener connected to another node."""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from arcana.adapters.redis_client import connect_redis
from arcana.adapters.redis_plugin_broadcast import RedisPluginReloadBroadcast
from arcana.bootstrap import App
from tests.conftest import wait_for
from tests.events_support import commit_events, product_event
from tests.rediscluster.cluster import LocalCluster


async def test_a_cluster_url_gives_a_cluster_client(container: App) -> None:
    assert isinstance(container.redis, RedisCluster)
    assert await container.health.ready() == {"database": True, "redis": True}


async def test_plugin_reload_goes_over_sharded_pubsub(
    container: App, redis_cluster: LocalCluster
) -> None:
    prefix = container.settings.redis.prefix
    other = connect_redis(redis_cluster.url)
    reloads: list[int] = []

    async def on_reload() -> None:
        reloads.append(1)

    # A long poll interval: only the message itself can trigger the reload in time.
    listener = RedisPluginReloadBroadcast(other, prefix, poll_seconds=3600)
    announcer = RedisPluginReloadBroadcast(connect_redis(redis_cluster.url), prefix)
    stop = asyncio.Event()
    task = asyncio.create_task(listener.listen(stop, on_reload))
    channel = f"{prefix}:control:plugins"
    try:

        def subscribers(kind: str) -> int:
            return sum(int(n.cli("PUBSUB", kind, channel).split()[-1]) for n in redis_cluster.nodes)

        def subscribed() -> bool:
            return subscribers("SHARDNUMSUB") == 1

        await wait_for(subscribed, timeout=10)
        await announcer.announce()
        await wait_for(lambda: reloads == [1], timeout=5)
        # Sharded: nobody listens on the plain channel of that name.
        assert subscribers("NUMSUB") == 0
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await other.aclose()
        await announcer._redis.aclose()


async def test_live_event_channel_reaches_a_listener_on_another_node(
    container: App, redis_cluster: LocalCluster
) -> None:
    # The relay's client publishes through whichever node it picks; listen on every node.
    listeners = [Redis(host="127.0.0.1", port=n.port) for n in redis_cluster.nodes]
    subs = [r.pubsub(ignore_subscribe_messages=True) for r in listeners]
    try:
        for s in subs:
            await s.subscribe("events:product.created")
        event = product_event("product.created")
        await commit_events(container, event)
        assert await container.events.relay.drain() is not None
        for s in subs:

            async def got(s: Any = s) -> bool:
                return await s.get_message(timeout=0.2) is not None

            await wait_for(got, timeout=5)
    finally:
        for s in subs:
            await s.aclose()
        for r in listeners:
            await r.aclose()
