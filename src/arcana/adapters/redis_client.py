"""One place that turns ``ARCANA_REDIS_URL`` into a client: a plain Redis or a Redis Cluster.

``redis+cluster://host:port`` (any node of the cluster) gives redis-py's asyncio
``RedisCluster``, which discovers the other nodes, routes each command by the hash slot of its
keys and follows MOVED/ASK redirections and failovers. It implements the same command methods
as ``Redis``, so the adapters keep one type (``Redis``) and branch on :func:`is_cluster` only
where the protocol differs: multi-key reads across slots, transactions, BLPOP over several
lists and sharded pub/sub.
"""

from __future__ import annotations

import logging
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)

CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")


def is_cluster_url(url: str) -> bool:
    return url.startswith(CLUSTER_SCHEMES)


def is_cluster(redis: Redis) -> bool:
    return isinstance(redis, RedisCluster)


async def prepare_redis(redis: Redis) -> None:
    """Load a cluster client's slot map before the first burst of commands: many commands
    racing to initialise a fresh redis-py cluster client can fail on a connection that the
    initialisation replaced. Unreachable now: it initialises on first use instead."""
    if not is_cluster(redis):
        return
    try:
        await redis.initialize()
    except (RedisError, OSError) as exc:
        log.warning("redis cluster not reachable at start-up: %s", exc)


def connect_redis(url: str) -> Redis:
    """A client for ``url``; a cluster client is typed as ``Redis`` (same command API)."""
    common: dict[str, Any] = {
        "socket_timeout": 2.0,
        "socket_connect_timeout": 2.0,
        "health_check_interval": 15,
        # After a Redis restart every pooled socket is dead; one quick retry on a fresh
        # connection hides that instead of failing the first command on each of them.
        "retry": Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries=1),
    }
    if is_cluster_url(url):
        plain = url.replace("+cluster", "", 1)
        # Per node: a failed-over master's slots move to its replica; the client refreshes
        # its slot map on the connection error and retries the command there.
        common["retry"] = Retry(ExponentialWithJitterBackoff(base=0.1, cap=1.0), retries=4)
        cluster = RedisCluster.from_url(plain, max_connections=64, **common)
        return cast(Redis, cluster)
    return Redis.from_url(
        url,
        max_connections=256,
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        **common,
    )
