"""Generate ``src/arcana/rpc/gen`` from ``proto/`` with grpcio-tools (``make proto``).

The generated modules are committed so ``pip install .`` needs no code generator;
``tests/unit/test_proto_generated.py`` regenerates into a temporary directory and fails on any
difference, so the committed code cannot drift from the ``.proto``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
GEN_DIR = ROOT / "src" / "arcana" / "rpc" / "gen"
PROTOS = ["arcana/product/v1/product.proto"]
# protoc names modules after the proto path (``arcana.product.v1``), which would collide with
# our own ``arcana`` package; generated imports are rewritten under ``arcana.rpc.gen``.
_IMPORT_FROM = "from arcana.product.v1 import"
_IMPORT_TO = "from arcana.rpc.gen.arcana.product.v1 import"


def generate(out: Path) -> list[Path]:
    from grpc_tools import protoc

    try:
        from importlib.resources import files

        include = str(files("grpc_tools") / "_proto")
    except Exception:  # pragma: no cover
        include = ""
    out.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *PROTOS,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for path in out.rglob("*.py*"):
        text = path.read_text()
        if _IMPORT_FROM in text:
            path.write_text(text.replace(_IMPORT_FROM, _IMPORT_TO))
    for directory in [out, *(d for d in out.rglob("*") if d.is_dir())]:
        if directory.name != "__pycache__":
            (directory / "__init__.py").touch()
    return sorted(p for p in out.rglob("*.py*") if "__pycache__" not in p.parts)


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else GEN_DIR
    for p in generate(target):
        sys.stdout.write(f"{p.relative_to(target)}\n")
