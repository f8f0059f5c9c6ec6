"""``arcana.request_ids``: 32 hex digits, unique in a process and across forked processes."""

from __future__ import annotations

import os
import re

from arcana.request_ids import new_request_id


def test_ids_are_32_hex_digits_and_unique() -> None:
    ids = [new_request_id() for _ in range(10_000)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert len(set(ids)) == len(ids)


def test_a_forked_child_draws_a_prefix_of_its_own() -> None:
    """``arcana serve --workers N`` forks: a child must not repeat its parent's ids."""
    parent = new_request_id()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next id and leave without running pytest's exit
        os.close(read)
        os.write(write, new_request_id().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    again = new_request_id()
    assert len(child) == 32
    assert child[:16] != parent[:16]
    assert again[:16] == parent[:16]
    assert child != again
