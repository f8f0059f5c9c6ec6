"""What a single enqueue packs by hand instead of through a library: the job id (a version 4
UUID's canonical text, as ``str(uuid.uuid4())``) and the protocol's bulk strings."""

from __future__ import annotations

import uuid

import hiredis

from arcana.adapters.jobqueue.new_jobs import new_job_id
from arcana.adapters.jobqueue.script_call import ARRAY_HEAD, BULK_HEAD, BULK_INT, _bulk, _command
from arcana.domain.jobs import Priority


def test_job_id_is_a_random_uuid4_in_canonical_text() -> None:
    ids = [new_job_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
    # every other bit is random: each hex digit outside the fixed ones takes many values
    for position in (0, 9, 15, 20, 35):
        assert len({text[position] for text in ids}) > 8


def parse(packed: bytes) -> object:
    reader = hiredis.Reader()
    reader.feed(packed)
    return reader.gets()


def test_bulk_strings_of_every_length_and_integer() -> None:
    for raw in [b"", b"x", "é".encode(), b"a" * 4096, b"b" * 4097, b"c" * 70_000]:
        assert parse(BULK_HEAD[len(raw)] + raw + b"\r\n") == raw
        assert parse(_bulk(raw)) == raw
    for n in [0, 1, 9, 10, 4096, 4097, 10**12, -1, -4097]:
        assert parse(BULK_INT[n]) == str(n).encode()
    assert parse(BULK_INT[Priority.CRITICAL]) == b"3"
    assert parse(ARRAY_HEAD[2] + _bulk("a") + _bulk(7)) == [b"a", b"7"]
    assert parse(_command("EVALSHA", "f" * 40, 1, "k", "é")) == [
        b"EVALSHA",
        b"f" * 40,
        b"1",
        b"k",
        "é".encode(),
    ]
    # what is kept stays small, whatever was asked
    assert max(BULK_HEAD) <= 4096
    assert min(BULK_INT) >= 0
    assert max(BULK_INT) <= 4096
