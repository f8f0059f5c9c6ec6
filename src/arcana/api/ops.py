"""Operations endpoints: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from arcana.api.deps import ServicesDep
from arcana.api.problems import problem_response

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Database (and Redis, if configured) reachable",
    responses={503: {"description": "A dependency is down"}},
)
async def readyz(services: ServicesDep) -> Response:
    checks = await services.health.ready()
    if all(checks.values()):
        return Response(
            content=b'{"status":"ready","checks":' + _checks_json(checks) + b"}",
            media_type="application/json",
        )
    down = ", ".join(k for k, ok in checks.items() if not ok)
    return problem_response(
        503,
        "SERVICE_UNAVAILABLE",
        "Service unavailable",
        f"Not ready: {down} unreachable",
        extra={"checks": checks},
    )


def _checks_json(checks: Mapping[str, object]) -> bytes:
    import orjson

    return orjson.dumps(checks)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
