"""``arcana --help`` and bad usage load none of the heavy libraries: each command imports the
container (SQLAlchemy, grpc, wasmtime, uvicorn) and the settings (pydantic-settings, about
0.1 s of the 0.25 s ``--help`` took with them) only when it runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = (
    "wasmtime",
    "grpc",
    "sqlalchemy",
    "uvicorn",
    "granian",
    "fastapi",
    "alembic",
    "asyncpg",
    "pydantic_settings",
)

PROBE = """
import json, sys
args, heavy_names = json.loads(sys.argv[1]), set(json.loads(sys.argv[2]))
sys.argv = ["arcana", *args]
from arcana.cli import main
try:
    main()
except SystemExit as exc:
    code = exc.code
else:
    code = 0
heavy = sorted({m.split(".")[0] for m in sys.modules} & heavy_names)
sys.stderr.write("\\nPROBE " + json.dumps({"code": code, "heavy": heavy}) + "\\n")
"""


@pytest.mark.parametrize(
    ("args", "code"),
    [(["--help"], 0), (["users", "--help"], 0), (["serve", "--help"], 0), (["bogus"], 2)],
)
def test_help_and_usage_errors_import_no_heavy_library(args: list[str], code: int) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args), json.dumps(HEAVY)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    line = next(x for x in proc.stderr.splitlines() if x.startswith("PROBE "))
    result = json.loads(line.removeprefix("PROBE "))
    assert result == {"code": code, "heavy": []}


def test_the_container_loads_no_migration_tool_nor_http_client() -> None:
    """Commands that neither migrate, call a webhook, send a mail nor check an address
    (``users list``, ``jobs stats``…) do not pay at start-up for Alembic (and Mako, Pygments),
    httpx, Jinja2, aiosmtplib, email-validator or wasmtime (made at the first plugin use);
    nor for redis-py where no Redis is configured (the composition root imports it only where
    Redis is)."""
    optional = {
        "alembic",
        "httpx",
        "rich",
        "jinja2",
        "aiosmtplib",
        "email_validator",
        "redis",
        "wasmtime",
    }
    code = (
        "import sys, arcana.bootstrap\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {optional!r}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert out.strip() == "[]"


def test_a_command_on_an_embedded_database_at_the_newest_migration_loads_no_alembic(
    tmp_path: Path,
) -> None:
    """Embedded start-up migrates only a database behind the newest migration: one already
    there is told by one statement, without Alembic and its scripts. Nor does a process
    without Redis load redis-py, nor one that runs no plugin wasmtime, from start to stop."""
    env = {
        "PATH": "/usr/bin:/bin",
        "ARCANA_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'a.db'}",
        "ARCANA_VAR_DIR": str(tmp_path / "var"),
    }
    arcana = str(Path(sys.executable).parent / "arcana")
    subprocess.run([arcana, "migrate"], env=env, capture_output=True, timeout=120, check=True)
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            PROBE,
            json.dumps(["users", "list"]),
            json.dumps(["alembic", "redis", "wasmtime"]),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    line = next(x for x in proc.stderr.splitlines() if x.startswith("PROBE "))
    assert json.loads(line.removeprefix("PROBE ")) == {"code": 0, "heavy": []}


def test_a_command_freezes_its_objects_before_the_interpreter_exits() -> None:
    """The interpreter's collections at exit would walk every object again (0.3-0.5 s of a
    command, ``make bench-cli``): the command freezes them once it is done, error or not."""
    code = (
        "import gc, sys\n"
        "sys.argv = ['arcana', '--version']\n"
        "from arcana.cli import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(gc.get_freeze_count() > 1000)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert out.strip().splitlines()[-1] == "True"
