"""infra/: the Terraform cluster (CPU pool + tainted GPU pool) parsed with python-hcl2, the kind
config, and the prometheus-adapter rules the chart's HPAs depend on."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml

from .rendering import CHART, ROOT, by_kind, render

GKE = ROOT / "infra" / "gke"
ADAPTER = ROOT / "infra" / "prometheus-adapter" / "values.yaml"


def strip(value: Any) -> Any:
    """python-hcl2 keeps string quotes in some versions; compare without them."""
    if isinstance(value, str):
        return value.strip('"')
    if isinstance(value, dict):
        return {strip(k): strip(v) for k, v in value.items()}
    if isinstance(value, list):
        return [strip(v) for v in value]
    return value


@pytest.fixture(scope="module")
def terraform() -> dict[str, Any]:
    merged: dict[str, list] = {}
    for path in sorted(GKE.glob("*.tf")):
        with path.open() as f:
            for key, blocks in strip(hcl2.load(f)).items():
                merged.setdefault(key, []).extend(blocks)
    return merged


def resources(terraform: dict[str, Any], kind: str) -> dict[str, Any]:
    return {
        name: body
        for block in terraform["resource"]
        for k, named in block.items()
        if k == kind
        for name, body in named.items()
    }


def only(value: Any) -> Any:
    return value[0] if isinstance(value, list) else value


def test_cluster_has_a_cpu_pool_and_a_gpu_pool(terraform: dict[str, Any]) -> None:
    (cluster,) = resources(terraform, "google_container_cluster").values()
    assert cluster["remove_default_node_pool"] is True
    pools = resources(terraform, "google_container_node_pool")
    assert set(pools) == {"cpu", "gpu"}
    cpu = only(pools["cpu"]["node_config"])
    assert "guest_accelerator" not in cpu and "taint" not in cpu


def test_gpu_pool_is_tainted_and_labelled_as_the_chart_expects(terraform: dict[str, Any]) -> None:
    gpu = only(resources(terraform, "google_container_node_pool")["gpu"]["node_config"])
    accelerator = only(gpu["guest_accelerator"])
    assert accelerator["type"] == "${var.gpu_type}"
    taint = only(gpu["taint"])
    values = yaml.safe_load((CHART / "values.yaml").read_text())["gpuNodePool"]
    (toleration,) = values["tolerations"]
    assert taint["key"] == toleration["key"] == "nvidia.com/gpu"
    assert taint["effect"] == "NO_SCHEDULE" and toleration["effect"] == "NoSchedule"
    ((label, pool),) = values["nodeSelector"].items()
    assert pool == "gpu"
    assert label in str(gpu["labels"]) or "local.pool_label" in str(gpu["labels"])
    locals_ = {k: v for block in terraform["locals"] for k, v in block.items()}
    assert locals_["pool_label"] == label


def test_every_variable_is_described(terraform: dict[str, Any]) -> None:
    for block in terraform["variable"]:
        for name, body in block.items():
            assert body.get("description"), name


def test_terraform_files_are_formatted() -> None:
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip(
            "no terraform binary here (no registry ships one); python-hcl2 parsed the files"
        )
    result = subprocess.run(
        [terraform, "fmt", "-check", "-diff", "-recursive", str(ROOT / "infra")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout


def test_kind_cluster_stands_in_for_both_pools() -> None:
    config = yaml.safe_load((ROOT / "infra" / "kind" / "cluster.yaml").read_text())
    workers = [n for n in config["nodes"] if n["role"] == "worker"]
    assert {w["labels"]["vlarena.dev/node-pool"] for w in workers} == {"cpu", "gpu"}
    values = ROOT / "infra" / "kind" / "vlarena-values.yaml"
    objects = render([values])
    assert by_kind(objects, "Deployment")


def adapter_rules() -> dict[str, dict[str, Any]]:
    rules = yaml.safe_load(ADAPTER.read_text())["rules"]
    return {
        kind: {rule["name"]["as"]: rule for rule in rules[kind]} for kind in ("custom", "external")
    }


def test_prometheus_adapter_serves_every_metric_the_hpas_use() -> None:
    rules = adapter_rules()
    used = {"Pods": set(), "External": set()}
    for values in (None, CHART / "ci" / "gpu-workers-values.yaml"):
        for hpa in by_kind(render([values] if values else []), "HorizontalPodAutoscaler"):
            for metric in hpa["spec"]["metrics"]:
                if metric["type"] == "Pods":
                    used["Pods"].add(metric["pods"]["metric"]["name"])
                elif metric["type"] == "External":
                    used["External"].add(metric["external"]["metric"]["name"])
    assert used["Pods"] == {"vlarena_http_requests_per_second", "vlarena_triton_queue_time_us"}
    assert used["Pods"] <= rules["custom"].keys()
    assert used["External"] == {"vlarena_worker_demand"} <= rules["external"].keys()


def test_adapter_rules_read_the_metrics_the_components_export() -> None:
    rules = adapter_rules()
    assert (
        "vlarena_http_requests_total"
        in rules["custom"]["vlarena_http_requests_per_second"]["metricsQuery"]
    )
    queue_time = rules["custom"]["vlarena_triton_queue_time_us"]["metricsQuery"]
    assert (
        "nv_inference_queue_duration_us" in queue_time
        and "nv_inference_request_success" in queue_time
    )
    demand = rules["external"]["vlarena_worker_demand"]["metricsQuery"]
    assert "vlarena_queue_jobs" in demand and "vlarena_worker_busy" in demand
    from vlarena.gateway import metrics as gateway_metrics
    from vlarena.worker import metrics as worker_metrics

    assert gateway_metrics.HTTP_REQUESTS._name == "vlarena_http_requests"
    assert worker_metrics.BUSY._name == "vlarena_worker_busy"
    assert "vlarena_queue_jobs" in Path(gateway_metrics.__file__).read_text()
