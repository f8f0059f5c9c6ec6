"""Partitions of the Redis queue and event stream, each under its own hash tag.

A Redis Cluster places a key by the CRC16 slot of its hash tag (the ``{...}`` part), and
``redis-cli --cluster create`` gives each master an equal, contiguous range of the 16384
slots. A tag is chosen for partition ``i`` of ``n`` whose slot lies in the ``i``-th of ``n``
equal slot ranges, so n partitions on n masters (or a multiple of them) land one per master
instead of wherever the CRC of ``p0``, ``p1``... happens to fall. The choice depends only on
the prefix and ``n``, so every process computes the same tags.

With one partition nothing changes: the callers keep their historical keys.
"""

from __future__ import annotations

import zlib

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot


def partition_tags(base: str, count: int) -> list[str]:
    """``count`` hash-tag strings (without braces) derived from ``base``."""
    if count < 1:
        raise ValueError("partition count must be at least 1")
    tags: list[str] = []
    for i in range(count):
        lo = i * REDIS_CLUSTER_HASH_SLOTS // count
        hi = (i + 1) * REDIS_CLUSTER_HASH_SLOTS // count
        j = 0
        while True:
            tag = f"{base}:p{i}.{j}"
            if lo <= key_slot(tag.encode()) < hi:
                tags.append(tag)
                break
            j += 1
    return tags


def partition_of(key: str, count: int) -> int:
    """A stable partition for ``key``: the same in every process and on every run."""
    if count == 1:
        return 0
    return zlib.crc32(key.encode()) % count
