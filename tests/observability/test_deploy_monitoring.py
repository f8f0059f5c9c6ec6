"""deploy/prometheus/alerts.yml passes promtool (syntax and its rule unit tests), and every
metric the alerts and the Grafana dashboard query is one that /metrics really exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
METRIC = re.compile(r"\barcana_[a-z0-9_]+")
SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def exported_families(metrics_text: str) -> dict[str, str]:
    """Metric family -> type, from the ``# TYPE`` lines (present even before a sample)."""
    families: dict[str, str] = {}
    for line in metrics_text.splitlines():
        if line.startswith("# TYPE arcana_"):
            _, _, name, kind = line.split(" ", 3)
            families[name] = kind
    return families


def resolves(name: str, families: dict[str, str]) -> bool:
    if name in families:  # gauges, and counters (whose TYPE line names them with _total)
        return families[name] in ("gauge", "untyped") or (
            families[name] == "counter" and name.endswith("_total")
        )
    for suffix in SUFFIXES:
        base = name.removesuffix(suffix)
        if base != name and base in families:
            kind = families[base]
            if suffix == "_bucket":
                return kind == "histogram"
            if suffix == "_total":
                return kind == "counter"
            return kind in ("histogram", "summary", "counter")
    return False


def dashboard_queries(project_root: Path) -> list[str]:
    dash = json.loads((project_root / "deploy/grafana/arcana-dashboard.json").read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def alert_queries(project_root: Path) -> list[str]:
    rules = yaml.safe_load((project_root / "deploy/prometheus/alerts.yml").read_text())
    return [r["expr"] for g in rules["groups"] for r in g["rules"]]


@pytest.mark.skipif(not Path(PROMTOOL).exists(), reason="promtool is not installed")
def test_alert_rules_pass_promtool(project_root: Path) -> None:
    folder = project_root / "deploy/prometheus"
    check = subprocess.run(
        [PROMTOOL, "check", "rules", "alerts.yml"], cwd=folder, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    unit = subprocess.run(
        [PROMTOOL, "test", "rules", "alerts_test.yml"], cwd=folder, capture_output=True, text=True
    )
    assert unit.returncode == 0, unit.stdout + unit.stderr


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
async def test_dashboard_and_alerts_query_only_exported_metrics(
    client: httpx.AsyncClient, project_root: Path
) -> None:
    r = await client.get("/metrics")
    assert r.status_code == 200
    families = exported_families(r.text)
    queries = dashboard_queries(project_root) + alert_queries(project_root)
    assert len(queries) > 20
    used = {name for q in queries for name in METRIC.findall(q)}
    unknown = sorted(n for n in used if not resolves(n, families))
    assert not unknown, f"queried but not exported: {unknown}"
    # Every panel has a query and every query names at least one of our metrics.
    assert all(METRIC.search(q) for q in queries)
