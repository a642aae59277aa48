"""The Kubernetes objects of a multi-node train job: an indexed Job of torchrun pods, the headless
Service they meet through, and the Kubeflow PyTorchJob that can stand in for both.

Every pod runs `torchrun ... -m vlarena.cli run-job <workdir>/spec.json --out <workdir> --events`
with the artifact store mounted where the worker has it, so the pods resume from and write to
the attempt's run directory, and rank 0 prints its progress events as JSON lines, which the
launcher reads from its log. `python -m vlarena.worker.k8s_templates SPEC` prints the objects
of a spec file (what `training-jobs/kubernetes/` holds for the example spec).
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from pathlib import Path
from typing import Any

from vlarena.rundirs import AttemptsDir, JobDir
from vlarena.settings import Settings
from vlarena.training.distributed import torchrun_command

RENDEZVOUS_PORT = 29500
CONTAINER = "trainer"
# The label every object and pod of one cluster attempt carries; the launcher watches by it.
CLUSTER_JOB_LABEL = "vlarena.dev/cluster-job"
JOB_ID_LABEL = "vlarena.dev/job-id"
ATTEMPT_LABEL = "vlarena.dev/attempt"
# Set by the Job controller on every pod of an indexed Job.
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"


def cluster_job_name(job_id: str, attempt: int) -> str:
    """`<job id>-<attempt>`: a DNS label short enough for the pods' `<name>-<index>` hostnames."""
    name = re.sub(r"[^a-z0-9-]+", "-", f"{job_id}-{attempt}".lower()).strip("-")
    return name[-52:].lstrip("-")


def _labels(job_id: str, attempt: int, name: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "vlarena",
        "app.kubernetes.io/component": "training",
        "app.kubernetes.io/managed-by": "vlarena-worker",
        CLUSTER_JOB_LABEL: name,
        JOB_ID_LABEL: job_id,
        ATTEMPT_LABEL: str(attempt),
    }


def _cpu_quantity(cores: float) -> str:
    return str(int(cores)) if float(cores).is_integer() else f"{round(float(cores) * 1000)}m"


def _container_resources(resources: dict[str, Any], settings: Settings) -> dict[str, Any]:
    requests: dict[str, str] = {}
    if resources.get("cpu"):
        requests["cpu"] = _cpu_quantity(resources["cpu"])
    if resources.get("memory"):
        requests["memory"] = str(resources["memory"])
    limits = dict(requests)
    gpus = int(resources.get("gpus", 0))
    if gpus:
        limits[settings.kubernetes_gpu_resource] = str(gpus)
    return {k: v for k, v in (("requests", requests), ("limits", limits)) if v}


def _run_job_args(workdir: Path) -> list[str]:
    """What every pod passes to `run-job`: a submitted job runs confined, as on a worker."""
    return ["--out", str(workdir), "--events", "--quiet", "--confined"]


def _confinement_env(settings: Settings) -> list[dict[str, str]]:
    """The worker's confinement settings, so the pods read no more than the worker would."""
    return [
        {"name": "VLARENA_DATA_ROOTS", "value": json.dumps([str(p) for p in settings.data_roots])},
        {"name": "VLARENA_ALLOW_IMAGE_URLS", "value": json.dumps(settings.allow_image_urls)},
        {"name": "VLARENA_IMAGE_URL_MAX_BYTES", "value": str(settings.image_url_max_bytes)},
        {
            "name": "VLARENA_IMAGE_URL_TIMEOUT_SECONDS",
            "value": str(settings.image_url_timeout_seconds),
        },
        {"name": "VLARENA_MANIFEST_MAX_BYTES", "value": str(settings.manifest_max_bytes)},
    ]


def _pod_spec(spec: dict[str, Any], workdir: Path, settings: Settings, name: str) -> dict[str, Any]:
    resources = spec.get("resources") or {}
    nodes = int(resources.get("nodes", 1))
    gpus = int(resources.get("gpus", 0))
    command = torchrun_command(
        ["run-job", str(JobDir(workdir).spec), *_run_job_args(workdir)],
        nproc_per_node=max(gpus, 1),
        nnodes=nodes,
        node_rank="$(JOB_COMPLETION_INDEX)",
        master=(f"{name}-0.{name}", RENDEZVOUS_PORT),
        executable="torchrun",
    )
    artifacts = str(settings.artifact_dir)
    volumes: list[dict[str, Any]] = [
        {"name": "shm", "emptyDir": {"medium": "Memory"}},
        {"name": "tmp", "emptyDir": {}},
    ]
    if settings.kubernetes_artifacts_claim:
        volumes.insert(
            0,
            {
                "name": "artifacts",
                "persistentVolumeClaim": {"claimName": settings.kubernetes_artifacts_claim},
            },
        )
    mounts = [{"name": "shm", "mountPath": "/dev/shm"}, {"name": "tmp", "mountPath": "/tmp"}]
    if settings.kubernetes_artifacts_claim:
        mounts.insert(0, {"name": "artifacts", "mountPath": artifacts})
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": settings.kubernetes_image,
        "command": command[:1],
        "args": command[1:],
        "env": [
            {
                "name": "JOB_COMPLETION_INDEX",
                "valueFrom": {
                    "fieldRef": {"fieldPath": f"metadata.annotations['{COMPLETION_INDEX}']"}
                },
            },
            {"name": "VLARENA_ARTIFACT_DIR", "value": artifacts},
            *_confinement_env(settings),
            {"name": "VLARENA_DEVICE", "value": "cuda" if gpus else "cpu"},
            {"name": "PYTHONUNBUFFERED", "value": "1"},
        ],
        "ports": [{"name": "rendezvous", "containerPort": RENDEZVOUS_PORT, "protocol": "TCP"}],
        "resources": _container_resources(resources, settings),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": mounts,
    }
    pod: dict[str, Any] = {
        # The pods' hostnames (`<name>-<index>`) resolve under the Service of the same name.
        "subdomain": name,
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "fsGroup": 10001},
        "containers": [container],
        "volumes": volumes,
    }
    if settings.kubernetes_service_account:
        pod["serviceAccountName"] = settings.kubernetes_service_account
    if settings.kubernetes_priority_class:
        pod["priorityClassName"] = settings.kubernetes_priority_class
    if gpus and settings.kubernetes_gpu_node_selector:
        pod["nodeSelector"] = dict(settings.kubernetes_gpu_node_selector)
    if gpus and settings.kubernetes_gpu_tolerations:
        pod["tolerations"] = [dict(t) for t in settings.kubernetes_gpu_tolerations]
    return pod


def render_service(job_id: str, attempt: int, settings: Settings) -> dict[str, Any]:
    """The headless Service whose DNS names let the nodes find rank 0 (published before ready)."""
    name = cluster_job_name(job_id, attempt)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": _labels(job_id, attempt, name)},
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {CLUSTER_JOB_LABEL: name},
            "ports": [
                {
                    "name": "rendezvous",
                    "port": RENDEZVOUS_PORT,
                    "targetPort": RENDEZVOUS_PORT,
                    "protocol": "TCP",
                }
            ],
        },
    }


def render_job(
    job_id: str, attempt: int, spec: dict[str, Any], workdir: Path, settings: Settings
) -> dict[str, Any]:
    """The indexed Job: one pod per node, all started together, index 0 hosting rank 0."""
    name = cluster_job_name(job_id, attempt)
    nodes = int((spec.get("resources") or {}).get("nodes", 1))
    labels = _labels(job_id, attempt, name)
    job_labels = dict(labels)
    if settings.kubernetes_queue_name:
        job_labels[KUEUE_QUEUE_LABEL] = settings.kubernetes_queue_name
    job_spec: dict[str, Any] = {
        "completionMode": "Indexed",
        "completions": nodes,
        "parallelism": nodes,
        "backoffLimit": settings.kubernetes_backoff_limit * nodes,
        "ttlSecondsAfterFinished": settings.kubernetes_ttl_seconds,
        "template": {
            "metadata": {"labels": labels},
            "spec": _pod_spec(spec, workdir, settings, name),
        },
    }
    if spec.get("activeDeadlineSeconds"):
        job_spec["activeDeadlineSeconds"] = int(spec["activeDeadlineSeconds"])
    if settings.kubernetes_queue_name:
        # Kueue admits a suspended Job as a whole once quota for every pod is free.
        job_spec["suspend"] = True
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": job_labels},
        "spec": job_spec,
    }


def render_pytorchjob(
    job_id: str, attempt: int, spec: dict[str, Any], workdir: Path, settings: Settings
) -> dict[str, Any]:
    """The same pods as a Kubeflow PyTorchJob (kubeflow.org/v1), for clusters that run the
    training operator: it makes the Services and the rendezvous variables itself."""
    name = cluster_job_name(job_id, attempt)
    nodes = int((spec.get("resources") or {}).get("nodes", 1))
    gpus = int((spec.get("resources") or {}).get("gpus", 0))
    labels = _labels(job_id, attempt, name)
    pod = _pod_spec(spec, workdir, settings, name)
    pod.pop("subdomain")
    container = pod["containers"][0]
    container["name"] = "pytorch"  # the name the operator looks for
    container["env"] = [e for e in container["env"] if e["name"] != "JOB_COMPLETION_INDEX"]
    container["command"] = ["torchrun"]
    # The operator sets PET_NNODES, PET_NODE_RANK, MASTER_ADDR and MASTER_PORT for torchrun.
    container["args"] = [
        "--nproc-per-node",
        str(max(gpus, 1)),
        "-m",
        "vlarena.cli",
        "run-job",
        str(JobDir(workdir).spec),
        *_run_job_args(workdir),
    ]

    def replica(count: int) -> dict[str, Any]:
        return {
            "replicas": count,
            "restartPolicy": "OnFailure",
            "template": {"metadata": {"labels": dict(labels)}, "spec": copy.deepcopy(pod)},
        }

    replicas = {"Master": replica(1)}
    if nodes > 1:
        replicas["Worker"] = replica(nodes - 1)
    run_policy: dict[str, Any] = {
        "backoffLimit": settings.kubernetes_backoff_limit * nodes,
        "ttlSecondsAfterFinished": settings.kubernetes_ttl_seconds,
        "cleanPodPolicy": "None",
    }
    if spec.get("activeDeadlineSeconds"):
        run_policy["activeDeadlineSeconds"] = int(spec["activeDeadlineSeconds"])
    if settings.kubernetes_queue_name:
        run_policy["suspend"] = True
    metadata: dict[str, Any] = {"name": name, "labels": dict(labels)}
    if settings.kubernetes_queue_name:
        metadata["labels"][KUEUE_QUEUE_LABEL] = settings.kubernetes_queue_name
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": metadata,
        "spec": {"runPolicy": run_policy, "pytorchReplicaSpecs": replicas},
    }


def main(argv: list[str] | None = None) -> int:
    import yaml

    from vlarena.jobs.spec import JOB_SPEC_ADAPTER, spec_document

    parser = argparse.ArgumentParser(
        prog="python -m vlarena.worker.k8s_templates",
        description="Print the Kubernetes objects a worker creates for a multi-node job spec, "
        "configured by the VLARENA_KUBERNETES_* settings.",
    )
    parser.add_argument("spec", type=Path)
    parser.add_argument("--job-id", default="job-example")
    parser.add_argument("--attempt", type=int, default=1)
    parser.add_argument("--pytorchjob", action="store_true", help="a Kubeflow PyTorchJob instead")
    args = parser.parse_args(argv)
    spec = spec_document(JOB_SPEC_ADAPTER.validate_python(yaml.safe_load(args.spec.read_text())))
    settings = Settings()
    workdir = AttemptsDir.of_job(settings.artifact_dir, args.job_id).attempt(args.attempt)
    if args.pytorchjob:
        objects = [render_pytorchjob(args.job_id, args.attempt, spec, workdir, settings)]
    else:
        objects = [
            render_service(args.job_id, args.attempt, settings),
            render_job(args.job_id, args.attempt, spec, workdir, settings),
        ]
    yaml.safe_dump_all(objects, sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
