"""deploy/k8s/: valid against the Kubernetes schemas (offline, ``kubernetes-validate``'s
bundled ones, strict: no unknown fields), and consistent with the code: probe paths are the
app's routes, ports are the configured ones, every variable is a ``Settings`` field, the grace
period covers ``ARCANA_SHUTDOWN_TIMEOUT``, pods run as the image's non-root user with a
read-only root filesystem."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from arcana.api.ops import router as ops_router
from arcana.config import Settings

ROOT = Path(__file__).resolve().parent.parent.parent
K8S = ROOT / "deploy" / "k8s"
# The preStop ``sleep`` action needs 1.30; check the oldest supported and the newest schemas.
VERSIONS = ["1.30.0", "1.37.0"]


def documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def one(kind: str, name: str) -> dict[str, Any]:
    return next(d for d in documents() if d["kind"] == kind and d["metadata"]["name"] == name)


def config() -> dict[str, str]:
    return dict(one("ConfigMap", "arcana-config")["data"])


def pod_specs() -> list[dict[str, Any]]:
    return [
        d["spec"]["template"]["spec"] for d in documents() if d["kind"] in {"Deployment", "Job"}
    ]


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_is_valid_offline(version: str) -> None:
    docs = documents()
    assert {d["kind"] for d in docs} >= {
        "Deployment", "Job", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler",
        "Secret", "ConfigMap",
    }  # fmt: skip
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_serve_and_worker_deployments_and_the_migration_job() -> None:
    assert one("Deployment", "arcana-serve")["spec"]["template"]["spec"]["containers"][0][
        "args"
    ] == ["serve"]
    assert one("Deployment", "arcana-worker")["spec"]["template"]["spec"]["containers"][0][
        "args"
    ] == ["worker"]
    assert one("Job", "arcana-migrate")["spec"]["template"]["spec"]["containers"][0]["args"] == [
        "migrate"
    ]


def test_every_variable_is_a_setting() -> None:
    variables = Settings.variables()
    names = list(config()) + list(one("Secret", "arcana-secrets")["stringData"])
    for name in names:
        assert name in variables, f"{name} is not a setting"
    # The values parse as the settings they name (the Secret's placeholders included).
    values = {**config(), **one("Secret", "arcana-secrets")["stringData"]}
    Settings(_env_file=None, **{k.removeprefix("ARCANA_").lower(): v for k, v in values.items()})


def test_probes_and_ports_match_the_code() -> None:
    routes = {getattr(r, "path", "") for r in ops_router.routes}
    pod = one("Deployment", "arcana-serve")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {
        "http": int(config()["ARCANA_HTTP_PORT"]),
        "grpc": int(config()["ARCANA_GRPC_PORT"]),
    }
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert {"/readyz", "/healthz"} <= routes
    service = one("Service", "arcana")
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= set(ports)
    labels = one("Deployment", "arcana-serve")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    pdb = one("PodDisruptionBudget", "arcana-serve")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = one("HorizontalPodAutoscaler", "arcana-serve")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": "arcana-serve",
    }  # fmt: skip


def test_grace_period_covers_the_shutdown_timeout() -> None:
    timeout = float(config()["ARCANA_SHUTDOWN_TIMEOUT"])
    for name in ("arcana-serve", "arcana-worker"):
        pod = one("Deployment", name)["spec"]["template"]["spec"]
        pre_stop = (
            pod["containers"][0].get("lifecycle", {}).get("preStop", {}).get("sleep", {})
        ).get("seconds", 0)
        assert pod["terminationGracePeriodSeconds"] >= pre_stop + timeout + 5, name


def test_non_root_read_only_with_writable_var_and_tmp() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    uid = int(re.findall(r"^USER\s+(\d+)", dockerfile, flags=re.M)[-1])
    for pod in pod_specs():
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == uid
        assert pod["automountServiceAccountToken"] is False
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert c["resources"]["requests"]["cpu"]
            assert c["resources"]["requests"]["memory"]
            assert {e["secretRef"]["name"] for e in c["envFrom"] if "secretRef" in e} == {
                "arcana-secrets"
            }
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            volumes = {v["name"]: v for v in pod["volumes"]}
            assert "/tmp" in mounts
            if c["args"] != ["migrate"]:
                assert mounts.get(config()["ARCANA_VAR_DIR"]) is not None
            for name in mounts.values():
                assert "emptyDir" in volumes[name]


def test_secrets_are_not_in_the_config_map() -> None:
    secret_names = set(one("Secret", "arcana-secrets")["stringData"])
    assert {"ARCANA_JWT_SECRET", "ARCANA_DATABASE_URL", "ARCANA_REDIS_URL"} <= secret_names
    assert not secret_names & set(config())


def test_worker_liveness_probe_reads_the_file_the_worker_touches(tmp_path: Path) -> None:
    """The probes name the file of the container's ``ARCANA_WORKER_ALIVE_FILE``, and their
    command, run here by ``sh`` on a stand-in file, passes on a fresh file and fails on one a
    minute old or missing."""
    from arcana.worker.alive_file import TOUCH_EVERY

    (container,) = one("Deployment", "arcana-worker")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    alive = env["ARCANA_WORKER_ALIVE_FILE"]
    assert alive.startswith("/tmp/")  # the writable emptyDir, not the read-only root
    assert "ARCANA_WORKER_ALIVE_FILE" in Settings.variables()
    liveness, startup = container["livenessProbe"], container["startupProbe"]
    assert liveness["exec"] == startup["exec"]
    command = liveness["exec"]["command"]
    assert alive in command[-1]
    # A failed probe is retried: a stuck worker is restarted after failureThreshold periods.
    assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 30
    stand_in = tmp_path / "alive"
    run = [*command[:-1], command[-1].replace(alive, str(stand_in))]
    assert subprocess.run(run).returncode != 0  # missing
    stand_in.touch()
    assert subprocess.run(run).returncode == 0  # fresh
    stale = time.time() - 60
    os.utime(stand_in, (stale, stale))
    assert subprocess.run(run).returncode != 0  # a minute old
    recent = time.time() - 4 * TOUCH_EVERY  # missed three touches: still alive
    os.utime(stand_in, (recent, recent))
    assert subprocess.run(run).returncode == 0
