"""deploy/k8s/ checked offline: every manifest parses, kinds are known, kustomize renders, the pieces fit."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from bench import __version__
from bench.api_names import PROMETHEUS_PATH
from tests.deploy.manifests import KUBECTL, kustomize, load_file, yaml_reader

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
KNOWN_KINDS = {
    ("v1", "ConfigMap"),
    ("v1", "PersistentVolumeClaim"),
    ("v1", "Service"),
    ("apps/v1", "Deployment"),
    ("batch/v1", "Job"),
    ("kustomize.config.k8s.io/v1beta1", "Kustomization"),
}
KUSTOMIZATIONS = sorted(p.parent for p in K8S.rglob("kustomization.yaml"))

needs_yaml = pytest.mark.skipif(yaml_reader() is None, reason="no YAML reader: neither PyYAML nor kubectl installed")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed: kustomize rendering not checked")


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


@needs_yaml
@pytest.mark.parametrize("path", sorted(K8S.rglob("*.yaml")), ids=lambda p: str(p.relative_to(K8S)))
def test_every_manifest_parses_with_a_known_kind(path: Path) -> None:
    docs = load_file(path)
    assert docs, f"{path} holds no document"
    for doc in docs:
        assert (doc.get("apiVersion"), doc.get("kind")) in KNOWN_KINDS, doc.get("kind")


@needs_yaml
@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(K8S)) or "k8s")
def test_kustomization_resources_exist(directory: Path) -> None:
    (kustomization,) = load_file(directory / "kustomization.yaml")
    for resource in kustomization["resources"]:
        path = directory / resource
        assert path.is_file() or (path / "kustomization.yaml").is_file(), resource


@needs_kubectl
def test_base_renders_serving_workers_and_the_sweep_job() -> None:
    docs = kustomize(K8S)
    deployments, services, jobs = by_kind(docs, "Deployment"), by_kind(docs, "Service"), by_kind(docs, "Job")
    claims = by_kind(docs, "PersistentVolumeClaim")

    serving = deployments["tfsbench-serving"]["spec"]
    assert serving["replicas"] >= 2
    (container,) = serving["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert container["image"].startswith("tensorflow/serving:")
    # The readiness probe is the REST model status endpoint of the model this replica serves.
    probe = container["readinessProbe"]["httpGet"]
    assert probe["path"] == f"/v1/models/{env['MODEL_NAME']}"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"rest": 8501, "grpc": 8500}
    assert probe["port"] == "rest"
    assert container["resources"]["requests"]["cpu"] == container["resources"]["limits"]["cpu"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["models"]["mountPath"] == env["MODEL_BASE_PATH"]
    assert mounts["models"]["readOnly"]
    volumes = {v["name"]: v for v in serving["template"]["spec"]["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"]["claimName"] in claims
    # Metrics for the per-replica Prometheus scrapes, at the path the sweep scrapes.
    config = by_kind(docs, "ConfigMap")[volumes["config"]["configMap"]["name"]]["data"]
    assert f'path: "{PROMETHEUS_PATH}"' in config["monitoring.config"]

    labels = serving["template"]["metadata"]["labels"]
    for name in ("tfsbench-serving", "tfsbench-serving-replicas"):
        spec = services[name]["spec"]
        assert spec["selector"].items() <= labels.items()
        assert {p["port"] for p in spec["ports"]} == {8500, 8501}
    assert services["tfsbench-serving-replicas"]["spec"]["clusterIP"] == "None"

    job = jobs["tfsbench-sweep"]["spec"]
    assert job["template"]["spec"]["restartPolicy"] == "Never"
    (sweep,) = job["template"]["spec"]["containers"]
    command = " ".join(sweep["command"] + sweep["args"])
    assert "tfsbench sweep --out /runs --expect-workers" in command
    assert "--master-bind-port 5557" in command
    (run_mount,) = sweep["volumeMounts"]
    assert run_mount["mountPath"] == "/runs"
    (run_volume,) = job["template"]["spec"]["volumes"]
    assert run_volume["persistentVolumeClaim"]["claimName"] in claims
    # The workers reach the Job's pod through the master Service, on the port it binds.
    master = services["tfsbench-locust-master"]["spec"]
    assert master["selector"].items() <= job["template"]["metadata"]["labels"].items()
    assert [p["port"] for p in master["ports"]] == [5557]
    (worker,) = deployments["tfsbench-locust-worker"]["spec"]["template"]["spec"]["containers"]
    args = worker["args"]
    assert "--worker" in args
    assert args[args.index("--master-host") + 1] == "tfsbench-locust-master"
    # tfsbench docker build-loadgen tags the image with the package version.
    assert worker["image"] == sweep["image"] == f"tfsbench/loadgen:{__version__}"
    for deployment in deployments.values():
        for c in deployment["spec"]["template"]["spec"]["containers"]:
            assert {"requests", "limits"} <= c["resources"].keys(), c["name"]


@needs_kubectl
def test_overlays_swap_images_and_model_location() -> None:
    standin = kustomize(K8S / "overlays" / "standin")
    images = {
        c["image"]: c.get("imagePullPolicy")
        for d in standin
        if d["kind"] in ("Deployment", "Job")
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert images == {"tfsbench/serving-standin:local": "Never", f"tfsbench/loadgen:{__version__}": "Never"}

    hostpath = kustomize(K8S / "overlays" / "hostpath-models")
    assert "tfsbench-models" not in by_kind(hostpath, "PersistentVolumeClaim")
    serving = by_kind(hostpath, "Deployment")["tfsbench-serving"]["spec"]["template"]["spec"]
    models = next(v for v in serving["volumes"] if v["name"] == "models")
    assert "hostPath" in models


def _cluster_context() -> str | None:
    if KUBECTL is None:
        return None
    proc = subprocess.run([KUBECTL, "config", "current-context"], capture_output=True, text=True, timeout=30)
    return proc.stdout.strip() or None


@needs_kubectl
def test_kubectl_apply_dry_run_client() -> None:
    # --dry-run=client still maps every kind through the API server's discovery, so it needs one.
    if _cluster_context() is None:
        pytest.skip("kubectl apply --dry-run=client needs an API server for discovery; kubectl has no context here")
    assert KUBECTL is not None
    rendered = subprocess.run([KUBECTL, "kustomize", str(K8S)], capture_output=True, text=True, timeout=120)
    proc = subprocess.run(
        [KUBECTL, "apply", "--dry-run=client", "-f", "-"],
        input=rendered.stdout,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
