"""``arcana demo-data`` through the real executable."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.process import arcana_bin

pytestmark = pytest.mark.slow


def test_demo_data_fills_catalog(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    env = {"PATH": "/usr/bin:/bin", "ARCANA_DATABASE_URL": f"sqlite+aiosqlite:///{db}"}
    out = subprocess.run(
        [arcana_bin(), "demo-data", "--products", "1234", "--batch-size", "500", "--seed", "7"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert "added 1234 products" in out.stdout
    with sqlite3.connect(db) as conn:
        count, statuses, min_stock = conn.execute(
            "SELECT count(*), count(DISTINCT status), min(stock) FROM products"
        ).fetchone()
    assert (count, statuses) == (1234, 1)
    assert min_stock >= 0


def test_demo_data_bad_usage(tmp_path: Path) -> None:
    out = subprocess.run(
        [arcana_bin(), "demo-data", "--products", "-1"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 2
