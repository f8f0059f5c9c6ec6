"""Static checks of the deployment files. No Docker engine runs on the development and CI
machines, so the image is not built here: the Dockerfile is linted with hadolint and the
compose file is checked for the structure the README promises."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent.parent


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    out = subprocess.run(
        [hadolint, "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_dockerfile_is_multi_stage_non_root_with_arcana_entrypoint() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", text, flags=re.M)
    assert len(stages) >= 2
    final = text.split(f"AS {stages[-1]}", 1)[1]
    assert "build-essential" not in final, "no build tools in the final image"
    user = re.findall(r"^USER\s+(\S+)", final, flags=re.M)
    assert user, "the final stage must switch to an unprivileged user"
    assert user[-1] not in {"root", "0", "0:0"}
    assert re.search(r'^ENTRYPOINT\s+\["arcana"\]', final, flags=re.M)


def test_compose_has_the_documented_services() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "migrate", "nginx"} <= set(services)
    apis = [n for n, s in services.items() if s.get("command", [None])[0] == "serve"]
    workers = [n for n, s in services.items() if s.get("command", [None])[0] == "worker"]
    assert len(apis) == 2
    assert len(workers) == 2
    assert services["migrate"]["command"] == ["migrate"]
    for name, svc in services.items():
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown service {dep}"
    for name in [*apis, *workers]:
        env = services[name]["environment"]
        assert env["ARCANA_DATABASE_URL"].startswith("postgresql+asyncpg://")
        assert env["ARCANA_REDIS_URL"].startswith("redis://")
        assert services[name]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )
    mounted = services["nginx"]["volumes"][0].split(":")[0]
    assert (ROOT / mounted).exists()


def test_nginx_config_balances_every_api_service() -> None:
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    apis = [n for n, s in compose["services"].items() if s.get("command", [None])[0] == "serve"]
    for name in apis:
        assert f"server {name}:8000" in conf
        assert f"server {name}:50051" in conf


def test_every_copy_source_of_the_dockerfile_exists() -> None:
    text = (ROOT / "Dockerfile").read_text()
    for line in re.findall(r"^COPY\s+(?!--from)(.+)$", text, flags=re.M):
        for src in line.split()[:-1]:
            matches = list(ROOT.glob(src)) if any(c in src for c in "*?[") else [ROOT / src]
            assert matches, f"COPY source {src} matches nothing"
            assert all(m.exists() for m in matches), f"COPY source {src} is missing"
