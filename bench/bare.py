# ruff: noqa: E402  (sys.path is cleaned before the imports, see below)
"""The "ceilings": the same product JSON served from memory by a bare FastAPI route
(returning a dict, FastAPI's usual path) and by a bare Starlette route (returning the bytes),
both with the same uvicorn settings as ``arcana serve`` (uvloop, httptools, no access log);
and (kind ``grpc``) a bare ``grpc.aio`` servicer of ``ProductService.GetProduct`` returning the
same product as a message built once, with no interceptors."""

from __future__ import annotations

import sys
from pathlib import Path

# Keep this directory off sys.path: a script here must never shadow an installed module.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson
import uvicorn
import uvloop
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def build(kind: str, body: bytes) -> Any:
    data = orjson.loads(body)
    if kind == "fastapi":
        app = FastAPI()

        @app.get("/bare/{item_id}")
        async def bare(item_id: str) -> dict[str, Any]:
            return data  # type: ignore[no-any-return]

        return app

    async def bare_starlette(request: Request) -> Response:
        return Response(body, media_type="application/json")

    return Starlette(routes=[Route("/bare/{item_id}", bare_starlette)])


async def serve_grpc(port: int, body: bytes) -> None:
    import grpc

    from arcana.rpc.gen.arcana.product.v1 import product_pb2 as pb
    from arcana.rpc.gen.arcana.product.v1 import product_pb2_grpc as pb_grpc

    d = orjson.loads(body)
    d["description"] = d["description"] or ""
    d["category"] = d["category"] or ""
    message = pb.ProductResponse(**d)

    class Bare(pb_grpc.ProductServiceServicer):  # type: ignore[misc]
        async def GetProduct(self, request: Any, context: Any) -> Any:
            return message

    server = grpc.aio.server()
    pb_grpc.add_ProductServiceServicer_to_server(Bare(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("kind", choices=["fastapi", "starlette", "grpc"])
    ap.add_argument("port", type=int)
    ap.add_argument("body", type=Path, help="file holding the product JSON to return")
    args = ap.parse_args()
    kind, port, path = args.kind, args.port, args.body
    if kind == "grpc":
        uvloop.run(serve_grpc(port, path.read_bytes()))
        sys.exit(0)
    config = uvicorn.Config(
        build(kind, path.read_bytes()),
        host="127.0.0.1",
        port=port,
        loop="none",
        http="httptools",
        access_log=False,
        log_level="warning",
        server_header=False,
    )
    uvloop.run(uvicorn.Server(config).serve())
