"""Password rules and the Argon2 adapter."""

from __future__ import annotations

import asyncio
import threading

import pytest

from arcana.adapters.passwords import Argon2PasswordHasher, HashingSlots
from arcana.errors import ValidationFailed
from arcana.services.passwords import check_password, common_passwords, password_problems


def test_common_list_is_shipped_and_loaded_once() -> None:
    words = common_passwords()
    assert len(words) >= 5000
    assert "password1" in words
    assert common_passwords() is words


@pytest.mark.parametrize("password", ["Password1", "pASSWORD1", "Qwerty123"])
def test_common_passwords_are_rejected_whatever_the_case(password: str) -> None:
    assert password_problems(password) == ["is too common"]


def test_every_failed_rule_is_listed() -> None:
    with pytest.raises(ValidationFailed) as info:
        check_password("")
    assert len(info.value.problems) == 4  # length, upper, lower, digit
    assert password_problems("Good-Passw0rd-Here") == []


def test_hasher_verify_and_rehash() -> None:
    cheap = Argon2PasswordHasher(memory_kib=1024, time_cost=1, parallelism=1)
    h = cheap.hash("Secret-123")
    assert h.startswith("$argon2id$v=19$m=1024,t=1,p=1$")
    assert cheap.verify(h, "Secret-123")
    assert not cheap.verify(h, "Secret-124")
    assert not cheap.verify("garbage", "Secret-123")
    assert not cheap.needs_rehash(h)
    stronger = Argon2PasswordHasher(memory_kib=2048, time_cost=2, parallelism=1)
    assert stronger.needs_rehash(h)
    assert stronger.verify(h, "Secret-123")  # old hashes still verify


def test_dummy_hash_costs_a_verification_and_never_matches() -> None:
    hasher = Argon2PasswordHasher(memory_kib=1024, time_cost=1, parallelism=1)
    dummy = hasher.dummy_hash()
    assert dummy.startswith("$argon2id$v=19$m=1024,t=1,p=1$")
    assert not hasher.needs_rehash(dummy)
    assert not hasher.verify(dummy, "")
    assert not hasher.verify(dummy, "anything")


class _GatedHasher:
    """Stands in for Argon2: each ``verify`` reports that it started, then blocks until the
    test opens its gate."""

    def __init__(self, calls: int) -> None:
        self.started = [threading.Event() for _ in range(calls)]
        self.gates = [threading.Event() for _ in range(calls)]
        self._next = 0
        self._lock = threading.Lock()

        self.kinds: list[str] = []

    def _call(self, kind: str) -> None:
        with self._lock:
            i, self._next = self._next, self._next + 1
            self.kinds.append(kind)
        self.started[i].set()
        assert self.gates[i].wait(10), "gate never opened"

    def verify(self, password_hash: str, password: str) -> bool:
        self._call("verify")
        return True

    def hash(self, password: str) -> str:
        self._call("hash")
        return "h"


async def test_a_freed_hashing_thread_starts_the_queued_verification_without_the_loop() -> None:
    """The next verification is already queued at the thread, so a busy event loop never
    leaves a hashing thread idle between two hashes."""
    hasher = _GatedHasher(2)
    slots = HashingSlots(hasher, slots=1, wait_seconds=5)  # type: ignore[arg-type]
    try:
        first = asyncio.create_task(slots.verify("h", "p"))
        second = asyncio.create_task(slots.verify("h", "p"))
        await asyncio.to_thread(hasher.started[0].wait, 5)
        # Until the second task has either reached the pool or parked on the admission limit.
        while not (slots._pool.queued() or slots._all.locked()):
            await asyncio.sleep(0)
        # From here the event loop is blocked (no await) while the first hash ends.
        hasher.gates[0].set()
        assert hasher.started[1].wait(5), "the second verification waited for the loop"
        hasher.gates[1].set()
        assert await first
        assert await second
    finally:
        for gate in hasher.gates:
            gate.set()
        slots.close()


async def test_new_hashes_never_hold_every_thread() -> None:
    """A registration flood leaves a thread for logins, also now that operations queue."""
    hasher = _GatedHasher(3)
    slots = HashingSlots(hasher, slots=2, wait_seconds=5)  # type: ignore[arg-type]
    try:
        tasks = [asyncio.create_task(slots.hash("p")) for _ in range(2)]
        await asyncio.to_thread(hasher.started[0].wait, 5)
        async with asyncio.timeout(5):  # the second hash either runs or waits for its turn
            while not (hasher.started[1].is_set() or slots._new._waiters):
                await asyncio.sleep(0)
        tasks.append(asyncio.create_task(slots.verify("h", "p")))
        await asyncio.to_thread(hasher.started[1].wait, 5)
        assert hasher.kinds == ["hash", "verify"]
    finally:
        for gate in hasher.gates:
            gate.set()
        await asyncio.gather(*tasks)
        slots.close()
