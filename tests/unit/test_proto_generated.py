"""The committed ``src/arcana/rpc/gen`` is exactly what grpcio-tools makes of ``proto/``."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _generator() -> object:
    spec = importlib.util.spec_from_file_location("proto_generate", ROOT / "proto" / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_code_matches_proto(tmp_path: Path) -> None:
    gen = _generator()
    fresh = gen.generate(tmp_path / "gen")  # type: ignore[attr-defined]
    committed_dir: Path = gen.GEN_DIR  # type: ignore[attr-defined]
    committed = sorted(p for p in committed_dir.rglob("*.py*") if "__pycache__" not in p.parts)
    rel = [p.relative_to(tmp_path / "gen") for p in fresh]
    assert rel == [p.relative_to(committed_dir) for p in committed], "file set differs: make proto"
    for name in rel:
        assert (tmp_path / "gen" / name).read_text() == (committed_dir / name).read_text(), (
            f"{name} is stale: run `make proto`"
        )


def test_contract_path_and_package() -> None:
    text = (ROOT / "proto" / "arcana" / "product" / "v1" / "product.proto").read_text()
    assert "package arcana.product.v1;" in text
    for rpc in ("GetProduct", "ListProducts", "CreateProduct", "UpdateProduct", "UpdateStock"):
        assert f"rpc {rpc}(" in text
    assert "rpc DeleteProduct(DeleteProductRequest) returns (google.protobuf.Empty);" in text
