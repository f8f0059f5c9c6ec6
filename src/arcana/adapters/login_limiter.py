"""Attempt limits: failed logins per account and per client address, and the fixed-window
quotas of registration and forgot-password.

``Redis*`` (``redis_login_limiter.py``) share the counts between every process (services
mode); ``Memory*`` (here) keep them in this process (embedded mode, one process). They live
apart so that a process without Redis never imports redis-py.

Reserve before the work: an attempt is counted *before* the password is checked, in one atomic
step with the check (one Lua call; in memory one synchronous step on the event loop), and given
back on success. So a burst of parallel guesses gets at most the limit's worth of Argon2
verifications, however many arrive at once.

Redis down: the Redis limiters fall back to the in-process ones (``Memory*``, same limits)
for as long as a call fails, with a rate-limited warning and
``arcana_login_limiter_errors_total`` counting. Logins keep working and each process still
enforces the limits on what it sees (with N processes, a client spread over all of them gets
up to N times a limit). Failing closed would turn a cache outage into a total login outage;
failing open would let a guesser who can take Redis down go unthrottled.

All keys of one call share the hash tag ``{limits}`` so a Lua call touching two of them stays on
one Redis Cluster slot.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class MemoryLoginLimiter:
    """Dict of key → (count, window end). Each call runs without an ``await`` between its check
    and its count, and the event loop runs one coroutine at a time: that is the atomic step.

    When full, expired windows go first, then windows that are not exhausted; an exhausted
    window (a locked account or address) is never dropped before its end, so a flood of new
    keys cannot unlock anything. If every entry is exhausted the dict grows past its soft cap:
    each such entry cost the attacker a full limit's worth of hashed attempts."""

    def __init__(
        self,
        max_per_account: int,
        max_per_address: int,
        window_seconds: int,
        max_entries: int = 100_000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limits = {"a": max_per_account, "i": max_per_address}
        self._window = window_seconds
        self._max_entries = max_entries
        self._monotonic = monotonic
        """Seconds on a clock that never goes back; a test passes one it moves by hand."""
        self._counts: dict[str, tuple[int, float]] = {}

    def _get(self, key: str, now: float) -> tuple[int, float]:
        item = self._counts.get(key)
        if item is None or item[1] <= now:
            self._counts.pop(key, None)
            return 0, now + self._window
        return item

    def _limit(self, key: str) -> int:
        return self._limits[key[0]]

    def _make_room(self, now: float) -> None:
        if len(self._counts) < self._max_entries:
            return
        live = {k: v for k, v in self._counts.items() if v[1] > now}
        if len(live) >= self._max_entries:
            # Drop the older half of the open windows; keep every locked one.
            locked = {k: v for k, v in live.items() if v[0] >= self._limit(k)}
            open_ = [(k, v) for k, v in live.items() if v[0] < self._limit(k)]
            live = dict(open_[len(open_) // 2 :])
            live.update(locked)
        self._counts = live

    async def reserve(self, account: str, address: str) -> int:
        now = self._monotonic()
        keys = ("a:" + account, "i:" + address)
        wait = 0.0
        for key in keys:
            count, end = self._get(key, now)
            if count >= self._limit(key):
                wait = max(wait, end - now)
        if wait > 0:
            return max(1, math.ceil(wait))
        self._make_room(now)
        for key in keys:
            count, end = self._get(key, now)
            self._counts[key] = (count + 1, end)
        return 0

    async def release(self, account: str, address: str) -> None:
        now = self._monotonic()
        self._counts.pop("a:" + account, None)
        key = "i:" + address
        count, end = self._get(key, now)
        if count > 1:
            self._counts[key] = (count - 1, end)
        else:
            self._counts.pop(key, None)

    async def refund(self, account: str, address: str) -> None:
        now = self._monotonic()
        for key in ("a:" + account, "i:" + address):
            count, end = self._get(key, now)
            if count > 1:
                self._counts[key] = (count - 1, end)
            else:
                self._counts.pop(key, None)


class MemoryAttemptQuota:
    """In-process quotas; expired windows are dropped when the dict passes its soft cap, and
    an exhausted window is never dropped early (see ``MemoryLoginLimiter``)."""

    def __init__(
        self, max_entries: int = 100_000, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._max_entries = max_entries
        self._monotonic = monotonic
        self._counts: dict[str, tuple[int, float, int]] = {}

    async def hit(self, bucket: str, key: str, limit: int, window_seconds: int) -> int:
        now = self._monotonic()
        name = f"{bucket}:{key}"
        item = self._counts.get(name)
        if item is None or item[1] <= now:
            item = (0, now + window_seconds, limit)
        count, end, _ = item
        if count >= limit:
            return max(1, math.ceil(end - now))
        if name not in self._counts and len(self._counts) >= self._max_entries:
            self._counts = {
                k: v for k, v in self._counts.items() if v[1] > now and v[0] >= v[2]
            } or {k: v for k, v in self._counts.items() if v[1] > now}
        self._counts[name] = (count + 1, end, limit)
        return 0
