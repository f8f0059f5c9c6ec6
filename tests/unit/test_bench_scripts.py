"""Every benchmark script starts from a checkout: ``bench/X.py --help`` exits 0.

A script that cannot even print its help (an import shadowed by a file in ``bench/``, a
missing module) would otherwise be found only when someone runs the benchmark."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((ROOT / "bench").glob("*.py"))


def test_no_bench_script_shadows_a_standard_module() -> None:
    shadowing = [p.name for p in SCRIPTS if p.stem in sys.stdlib_module_names]
    assert shadowing == []


def test_every_bench_script_prints_its_help() -> None:
    assert SCRIPTS, "no benchmark scripts found"
    procs = {
        p.name: subprocess.Popen(
            [sys.executable, str(p), "--help"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for p in SCRIPTS
    }
    failed = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        if proc.returncode != 0 or not out.strip():
            failed[name] = (proc.returncode, err.decode()[-800:])
    assert failed == {}
