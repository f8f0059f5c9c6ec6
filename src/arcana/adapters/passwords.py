"""Argon2id password hashing (argon2-cffi). Calls block for tens of milliseconds by design;
the auth service runs them in a worker thread."""

from __future__ import annotations

import base64
import secrets

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from arcana import tracing


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
