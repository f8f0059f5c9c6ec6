"""Request ids made for ``X-Request-ID`` (HTTP) and ``x-request-id`` (gRPC metadata) when the
client sent none: 32 hex digits, as ``uuid4().hex`` gives them.

Why not 16 fresh random bytes per request: that is a ``getrandom`` system call on every request,
a measurable part of a cached read (``bench/grpc.py``). A request id correlates a response with
log lines; the response hands it to the client, so it is no secret and need not be
unpredictable, only unique. Here: 64 random bits drawn once per process (drawn again in a forked
child, so ``arcana serve --workers N`` processes differ) followed by a 64-bit counter.
"""

from __future__ import annotations

import itertools
import os

_prefix = ""
# Counts from 2**64, so that ``hex(n)[3:]`` is 16 digits with leading zeros: ``hex`` is a fraction
# of the cost of ``format(n, "016x")``, and this runs on every request.
_counter = itertools.count(1 << 64)


def _reseed() -> None:
    global _prefix, _counter
    _prefix = os.urandom(8).hex()
    _counter = itertools.count(1 << 64)


_reseed()
os.register_at_fork(after_in_child=_reseed)


def new_request_id() -> str:
    """A fresh request id: unique in this process and, with overwhelming probability, across
    processes."""
    return _prefix + hex(next(_counter))[3:]
