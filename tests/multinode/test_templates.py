"""The Kubernetes objects of a multi-node job: valid, shaped as the issue asks, in step with the
checked-in example, and covered by the chart's worker Role exactly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from vlarena.jobs.spec import JOB_SPEC_ADAPTER, queue_for, spec_document
from vlarena.settings import Settings
from vlarena.worker.k8s_templates import (
    KUEUE_QUEUE_LABEL,
    render_job,
    render_pytorchjob,
    render_service,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "training-jobs" / "train-vl-jepa-emoji-multinode.yaml"
RENDERED = ROOT / "training-jobs" / "kubernetes" / "train-vl-jepa-emoji-multinode.yaml"
PYTORCHJOB = ROOT / "training-jobs" / "kubernetes" / "train-vl-jepa-emoji-multinode-pytorchjob.yaml"
JOB_ID = "job-0190abc1234def567"
KUBE_VERSIONS = ["1.29.0", kubernetes_validate.latest_version()]
# The settings the chart gives its workers by default (what the example was rendered with).
CHART_SETTINGS = Settings(
    artifact_dir=Path("/var/lib/vlarena"),
    kubernetes_image="ghcr.io/vlarena/vlarena-worker:0.1.0-cuda",
    kubernetes_artifacts_claim="arena-vlarena-artifacts",
    kubernetes_gpu_node_selector={"vlarena.dev/node-pool": "gpu"},
    kubernetes_gpu_tolerations=[
        {"effect": "NoSchedule", "key": "nvidia.com/gpu", "operator": "Exists"}
    ],
)
WORKDIR = Path("/var/lib/vlarena/jobs") / JOB_ID / "attempt-1"


def example_spec() -> dict[str, Any]:
    return spec_document(JOB_SPEC_ADAPTER.validate_python(yaml.safe_load(EXAMPLE.read_text())))


def objects(settings: Settings = CHART_SETTINGS) -> tuple[dict[str, Any], dict[str, Any]]:
    spec = example_spec()
    return render_service(JOB_ID, 1, settings), render_job(JOB_ID, 1, spec, WORKDIR, settings)


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_rendered_job_and_service_validate_strictly(kube_version: str) -> None:
    service, job = objects()
    kueue = Settings(kubernetes_queue_name="gpu-team", kubernetes_priority_class="training")
    for obj in (service, job, *objects(kueue)):
        kubernetes_validate.validate(obj, kube_version, strict=True)


def test_the_job_is_indexed_one_pod_per_node_on_the_gpu_pool() -> None:
    service, job = objects()
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["parallelism"] == spec["completions"] == 2
    assert spec["backoffLimit"] == 2 * 2 and spec["activeDeadlineSeconds"] == 21600
    assert spec["ttlSecondsAfterFinished"] == 3600
    pod = spec["template"]["spec"]
    assert pod["subdomain"] == service["metadata"]["name"] == job["metadata"]["name"]
    assert pod["nodeSelector"] == {"vlarena.dev/node-pool": "gpu"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    assert container["resources"]["limits"] == {
        "cpu": "32",
        "memory": "128Gi",
        "nvidia.com/gpu": "4",
    }
    args = container["args"]
    assert args[:4] == ["--nnodes", "2", "--nproc-per-node", "4"]
    assert args[args.index("--node-rank") + 1] == "$(JOB_COMPLETION_INDEX)"
    assert args[args.index("--master-addr") + 1] == f"{JOB_ID}-1-0.{JOB_ID}-1"
    assert args[args.index("-m") + 1 :][:2] == ["vlarena.cli", "run-job"]
    assert args[args.index("--out") + 1] == str(WORKDIR)
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["artifacts"] == "/var/lib/vlarena"
    claims = [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert claims[0]["persistentVolumeClaim"]["claimName"] == "arena-vlarena-artifacts"
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"]
    assert service["spec"]["selector"] == pod_labels_selector(job)


def pod_labels_selector(job: dict[str, Any]) -> dict[str, str]:
    labels = job["spec"]["template"]["metadata"]["labels"]
    return {"vlarena.dev/cluster-job": labels["vlarena.dev/cluster-job"]}


def test_kueue_gets_a_suspended_job_with_its_queue_label() -> None:
    _, job = objects(Settings(kubernetes_queue_name="gpu-team"))
    assert job["metadata"]["labels"][KUEUE_QUEUE_LABEL] == "gpu-team"
    assert job["spec"]["suspend"] is True
    _, plain = objects()
    assert KUEUE_QUEUE_LABEL not in plain["metadata"]["labels"] and "suspend" not in plain["spec"]


def test_the_checked_in_example_is_what_the_worker_renders() -> None:
    assert list(yaml.safe_load_all(RENDERED.read_text())) == list(objects())
    pytorchjob = render_pytorchjob(JOB_ID, 1, example_spec(), WORKDIR, CHART_SETTINGS)
    assert list(yaml.safe_load_all(PYTORCHJOB.read_text())) == [pytorchjob]


def test_the_pytorchjob_has_a_master_and_a_worker_per_further_node() -> None:
    job = render_pytorchjob(JOB_ID, 1, example_spec(), WORKDIR, CHART_SETTINGS)
    assert job["apiVersion"] == "kubeflow.org/v1" and job["kind"] == "PyTorchJob"
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert replicas["Master"]["replicas"] == 1 and replicas["Worker"]["replicas"] == 1
    container = replicas["Worker"]["template"]["spec"]["containers"][0]
    assert container["name"] == "pytorch"
    assert "run-job" in container["args"] and "--master-addr" not in container["args"]
    assert job["spec"]["runPolicy"]["backoffLimit"] == 4


def test_multi_node_specs_are_accepted_for_train_jobs_only() -> None:
    spec = JOB_SPEC_ADAPTER.validate_python(yaml.safe_load(EXAMPLE.read_text()))
    assert spec.resources.nodes == 2
    # A worker allowed to launch Kubernetes Jobs takes it; it needs no GPU itself.
    assert queue_for(spec) == "cluster"
    compare = {
        "type": "compare",
        "dataset": {"name": "fashion-grid"},
        "budget": {"steps": 5},
        "resources": {"nodes": 2},
    }
    with pytest.raises(ValueError, match=r"multi-node\) applies to train jobs only"):
        JOB_SPEC_ADAPTER.validate_python(compare)
    with pytest.raises(ValueError, match=r"resources\.nodes"):
        JOB_SPEC_ADAPTER.validate_python({**compare, "type": "train", "resources": {"nodes": 0}})


def test_pods_run_the_job_confined_with_the_workers_settings(tmp_path: Path) -> None:
    settings = Settings(
        artifact_dir=Path("/var/lib/vlarena"),
        data_roots=[Path("/data/shared")],
        allow_image_urls=True,
        image_url_max_bytes=1234,
    )
    _, job = objects(settings)
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["args"][-1] == "--confined"
    env = {e["name"]: e.get("value") for e in container["env"]}
    pod_settings = Settings(
        **{
            "data_roots": yaml.safe_load(env["VLARENA_DATA_ROOTS"]),
            "allow_image_urls": yaml.safe_load(env["VLARENA_ALLOW_IMAGE_URLS"]),
            "image_url_max_bytes": int(env["VLARENA_IMAGE_URL_MAX_BYTES"]),
        }
    )
    assert pod_settings.data_roots == [Path("/data/shared")]
    assert pod_settings.allow_image_urls and pod_settings.image_url_max_bytes == 1234
    pytorchjob = render_pytorchjob(JOB_ID, 1, example_spec(), WORKDIR, settings)
    master = pytorchjob["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    assert master["containers"][0]["args"][-1] == "--confined"
