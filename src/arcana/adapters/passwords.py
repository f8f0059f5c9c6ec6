"""Argon2id password hashing (argon2-cffi). Calls block for tens of milliseconds by design;
``HashingSlots`` runs them on a bounded pool of threads of its own."""

from __future__ import annotations

import asyncio
import base64
import contextvars
import math
import secrets
from collections.abc import Callable
from typing import TypeVar

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from arcana import tracing
from arcana.adapters.loop_threads import LoopThreads
from arcana.errors import ServiceUnavailable
from arcana.metrics import PASSWORD_HASHES, PASSWORD_SLOTS_BUSY

_T = TypeVar("_T")


class Argon2PasswordHasher:
    def __init__(self, memory_kib: int, time_cost: int, parallelism: int) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_kib,
            parallelism=parallelism,
            hash_len=32,
            salt_len=16,
            type=Type.ID,
        )
        # Same parameters as a real hash, random salt and digest: verifying against it costs a
        # real verification and never matches (argon2's cost depends on the parameters only).
        salt = base64.b64encode(secrets.token_bytes(16)).decode().rstrip("=")
        digest = base64.b64encode(secrets.token_bytes(32)).decode().rstrip("=")
        self._dummy = f"$argon2id$v=19$m={memory_kib},t={time_cost},p={parallelism}${salt}${digest}"

    # Spans carry no attribute at all: the password and the hash stay out of traces.
    def hash(self, password: str) -> str:
        with tracing.span("argon2.hash"):
            return self._hasher.hash(password)

    def verify(self, password_hash: str, password: str) -> bool:
        with tracing.span("argon2.verify"):  # a mismatch is an answer, not a span error
            try:
                return self._hasher.verify(password_hash, password)
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                return False

    def needs_rehash(self, password_hash: str) -> bool:
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except (InvalidHashError, ValueError):
            return True

    def dummy_hash(self) -> str:
        return self._dummy


class HashingSlots:
    """Argon2 on a fixed number of threads of its own (``ARCANA_PASSWORD_HASH_SLOTS``).

    Why not ``asyncio.to_thread``: the default pool is shared with everything else and queues
    without limit, so a registration flood would stack up hashes in front of every login.
    Here a request waits at most ``wait_seconds`` for a slot, then gets ``ServiceUnavailable``
    (503 + ``Retry-After``). New hashes (registration, password change and reset) may hold at
    most ``slots - 1`` slots when there are two or more (running or queued), so one thread
    always stays free for login verifications."""

    def __init__(self, hasher: Argon2PasswordHasher, slots: int, wait_seconds: float) -> None:
        self._hasher = hasher
        self._slots = max(1, slots)
        self._wait = wait_seconds
        self._pool = LoopThreads(self._slots, "argon2")
        # Twice as many operations admitted as there are threads: one running and one queued
        # in the pool per thread, so a thread that finishes a hash starts the next at once.
        # With exactly ``slots`` admitted, the next hash could only start after the event
        # loop had taken the result and woken the next waiter, and a thread stood idle for
        # as long as the loop was busy with other requests.
        self._all = asyncio.Semaphore(2 * self._slots)
        self._new = asyncio.Semaphore(max(1, self._slots - 1))

    async def _acquire(self, sem: asyncio.Semaphore, op: str) -> None:
        if not sem.locked():  # free now, and nobody waiting: acquiring does not suspend
            await sem.acquire()
            return
        # ``asyncio.timeout`` rather than ``wait_for``: the latter runs the wait in a task of
        # its own, created and scheduled for every hash that has to queue.
        try:
            async with asyncio.timeout(self._wait):
                await sem.acquire()
        except TimeoutError:
            PASSWORD_SLOTS_BUSY.labels(op).inc()
            raise ServiceUnavailable(
                "Too many password operations in progress; try again shortly",
                retry_after=max(1, math.ceil(self._wait)),
            ) from None

    async def _run(self, op: str, fn: Callable[[], _T]) -> _T:
        await self._acquire(self._all, op)
        try:
            PASSWORD_HASHES.labels(op).inc()
            # The caller's context goes along, so the argon2 span joins the request's trace.
            ctx = contextvars.copy_context()
            return await self._pool.run(ctx.run, fn)
        finally:
            self._all.release()

    async def hash(self, password: str) -> str:
        await self._acquire(self._new, "hash")
        try:
            return await self._run("hash", lambda: self._hasher.hash(password))
        finally:
            self._new.release()

    async def verify(self, password_hash: str, password: str) -> bool:
        return await self._run("verify", lambda: self._hasher.verify(password_hash, password))

    def needs_rehash(self, password_hash: str) -> bool:
        return self._hasher.needs_rehash(password_hash)

    def dummy_hash(self) -> str:
        return self._hasher.dummy_hash()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_pending=True)
