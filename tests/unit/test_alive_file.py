"""``ARCANA_WORKER_ALIVE_FILE``: touched while the event loop turns, removed when it is done."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from arcana.worker.alive_file import keep_alive
from tests.conftest import wait_for


async def test_the_file_is_touched_again_and_again_then_removed(tmp_path: Path) -> None:
    path = tmp_path / "alive"
    done = asyncio.Event()
    task = asyncio.create_task(keep_alive(path, done, every=0.01))
    await wait_for(path.exists, timeout=10)
    os.utime(path, ns=(0, 0))  # as if it were last touched in 1970
    await wait_for(lambda: path.exists() and path.stat().st_mtime_ns > 0, timeout=10)
    done.set()
    await asyncio.wait_for(task, 10)
    assert not path.exists()


async def test_a_failed_touch_is_logged_and_tried_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The folder is missing at first (touches fail), then appears: the loop keeps going."""
    path = tmp_path / "later" / "alive"
    done = asyncio.Event()
    task = asyncio.create_task(keep_alive(path, done, every=0.01))

    def failures() -> int:
        return sum("could not touch the alive file" in r.getMessage() for r in caplog.records)

    await wait_for(lambda: failures() >= 2, timeout=10)
    assert not task.done()
    path.parent.mkdir()
    await wait_for(path.exists, timeout=10)
    done.set()
    await asyncio.wait_for(task, 10)
    assert not path.exists()
