"""Settings of every vlarena component, read from `VLARENA_*` environment variables."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_artifact_dir() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "vlarena"


ApiScope = Literal["read", "submit", "admin"]


def _default_scopes() -> list[ApiScope]:
    return ["read"]


class ApiKeyEntry(BaseModel):
    """One gateway API key: its name, the SHA-256 of its secret (or the secret), its scopes and
    its team, if any."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    key: str | None = Field(
        default=None, min_length=16, description="The secret itself; hashed when loaded."
    )
    scopes: list[ApiScope] = Field(default_factory=_default_scopes)
    team: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="The key's team: what it makes (collections, model names) the team's keys "
        "may change too.",
    )

    @model_validator(mode="after")
    def _one_secret(self) -> ApiKeyEntry:
        if (self.sha256 is None) == (self.key is None):
            raise ValueError("give exactly one of 'sha256' and 'key'")
        return self


class Settings(BaseSettings):
    """One settings object for all components; each reads the fields it needs."""

    model_config = SettingsConfigDict(env_prefix="VLARENA_", extra="ignore")

    num_threads: int = Field(
        default=0,
        ge=0,
        description="torch intra-op threads for training and evaluation; 0 = one per core.",
    )
    device: str = Field(
        default="auto", description="'auto' (CUDA when present, else CPU), 'cpu' or 'cuda'."
    )
    artifact_dir: Path = Field(
        default_factory=_default_artifact_dir,
        description="Artifact store: runs, checkpoints, reports and the Triton model repository.",
    )

    # Job platform: Redis, gateway, workers and the client.
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description="Redis holding job state, logs and the model registry.",
    )
    broker_url: str | None = Field(
        default=None, description="Celery broker; defaults to `redis_url`."
    )
    key_prefix: str = Field(
        default="vlarena:", description="Prefix of every Redis key the job platform writes."
    )
    api_keys: list[ApiKeyEntry] = Field(
        default_factory=list,
        description=(
            'Gateway API keys as JSON: [{"name": "ci", "sha256": "<hex digest of the key>", '
            '"scopes": ["submit"]}]. Scopes: read, submit, admin.'
        ),
    )
    api_keys_file: Path | None = Field(
        default=None,
        description="A JSON or YAML file (a mounted Secret) with more keys in the same format.",
    )
    auth_disabled: bool = Field(
        default=False,
        description="Serve every request as an admin without a key (local development only).",
    )
    data_roots: list[Path] = Field(
        default_factory=list,
        description="Directories (besides `artifact_dir`) that jobs submitted through the "
        'gateway may read datasets, images and runs from, as JSON: ["/data/coco"]. The local '
        "CLI reads whatever its user can.",
    )
    manifest_max_bytes: int = Field(
        default=512 * 1024 * 1024,
        ge=1024,
        description="Largest manifest (or dataset.json) a submitted job may read.",
    )
    allow_image_urls: bool = Field(
        default=False,
        description="Let submitted jobs' manifests name http(s) images; they are fetched from "
        "public addresses only, within the size and time limits below.",
    )
    image_url_max_bytes: int = Field(
        default=20 * 1024 * 1024, ge=1024, description="Largest image fetched from a URL."
    )
    image_url_timeout_seconds: float = Field(
        default=30.0, gt=0, description="Longest time one image URL may take to fetch."
    )
    link_secret: str | None = Field(
        default=None,
        description="Key that signs shareable report links; unset, the gateways share a random "
        "one through Redis.",
    )
    link_ttl_seconds: int = Field(
        default=24 * 3600, ge=60, description="Default lifetime of a signed report link."
    )
    max_body_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="Largest request body of the gateway's routes (streamed bytes counted, "
        "chunked uploads included): 413 beyond it. The inference routes that take images have "
        "their own limit (`inference_max_image_bytes` × `inference_max_batch`).",
    )
    rate_limit_requests: int = Field(
        default=0,
        ge=0,
        description="Requests one API key may make per `rate_limit_window_seconds`, counted in "
        "Redis across every gateway replica (429 with Retry-After beyond it); 0: no limit.",
    )
    rate_limit_window_seconds: int = Field(
        default=60, ge=1, description="The window `rate_limit_requests` counts over."
    )
    max_active_jobs_per_caller: int = Field(
        default=0,
        ge=0,
        description="Jobs one API key may have waiting or running at once (429 with "
        "Retry-After beyond it); 0: no limit.",
    )
    gateway_host: str = Field(default="127.0.0.1", description="Address the gateway binds.")
    gateway_port: int = Field(default=8080, ge=0, le=65535, description="Port of the gateway.")
    gateway_workers: int = Field(default=1, ge=1, description="uvicorn worker processes.")
    gateway_access_log: bool = Field(default=True, description="uvicorn's access log.")
    metrics_dir: Path | None = Field(
        default=None,
        description=(
            "prometheus_client multiprocess directory shared by the gateway's worker processes; "
            "`vlarena gateway` makes a fresh one when unset."
        ),
    )
    lease_seconds: float = Field(
        default=30.0,
        gt=0,
        description="A running job's lease; the reaper requeues a job whose lease lapsed.",
    )
    heartbeat_seconds: float = Field(
        default=5.0, gt=0, description="How often a worker renews its lease and registration."
    )
    reaper_interval_seconds: float = Field(
        default=5.0, gt=0, description="How often each worker's reaper looks for lapsed leases."
    )
    retry_backoff_seconds: float = Field(
        default=10.0,
        ge=0,
        description="Delay before retrying a failed job, doubled on each failure (at most 5 min).",
    )
    poison_job_limit: int = Field(
        default=5,
        ge=0,
        description="Attempts of one job that may lose their worker (killed, out of memory, "
        "vanished) before the job ends FAILED with PoisonJob instead of being retried; 0: no "
        "limit beyond its maxRetries.",
    )
    stall_timeout_seconds: float = Field(
        default=1800.0,
        ge=0,
        description="An attempt that reports no progress, log or event this long is stopped and "
        "retried (error Stalled); 0 turns the watchdog off.",
    )
    stall_grace_seconds: float = Field(
        default=60.0,
        gt=0,
        description="How long a stalled attempt gets to stop once asked; past it the worker "
        "records the attempt as Stalled and exits, for its supervisor to start a fresh one.",
    )
    redis_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        description="Longest wait for Redis's answer to one command (sent once more after it): "
        "past it the gateway answers 503 and workers retry.",
    )
    worker_queues: str = Field(
        default="auto",
        description="Queues a worker takes jobs from: cpu, gpu, cluster (multi-node jobs; needs "
        "kubernetes_enabled), a comma-separated mix, or 'auto'.",
    )
    worker_metrics_port: int = Field(
        default=0, ge=0, le=65535, description="Port of a worker's /metrics; 0 disables it."
    )
    log_max_entries: int = Field(
        default=100_000, ge=100, description="Log lines and events kept per job (oldest dropped)."
    )
    job_retention_seconds: int = Field(
        default=7 * 24 * 3600,
        ge=0,
        description="How long a finished job's record, logs and events stay in Redis (its "
        "results stay in the artifact store); 0 keeps them forever.",
    )
    stream_max_followers: int = Field(
        default=100,
        ge=1,
        description="Log and event streams (`follow=true`) one gateway process serves at once; "
        "past it a follower gets 503 with Retry-After.",
    )
    stream_idle_seconds: float = Field(
        default=300.0,
        gt=0,
        description="A followed stream that delivers nothing this long is ended; the client "
        "reconnects with Last-Event-ID.",
    )
    stream_max_seconds: float = Field(
        default=3600.0,
        gt=0,
        description="Longest a followed stream lasts before the client reconnects with "
        "Last-Event-ID.",
    )
    log_format: Literal["json", "text"] = Field(
        default="json",
        description="Log lines of the gateway, workers and triton-sync: JSON objects carrying "
        "request_id and job_id, or plain text.",
    )
    log_level: str = Field(default="INFO", description="Level of the services' logs.")
    api_url: str = Field(
        default="http://127.0.0.1:8080", description="Gateway the CLI client talks to."
    )
    api_key: str | None = Field(default=None, description="API key the CLI client sends.")

    # Multi-node training: workers launch jobs with resources.nodes > 1 as Kubernetes Jobs.
    kubernetes_enabled: bool = Field(
        default=False,
        description="Launch multi-node train jobs as indexed Kubernetes Jobs from this worker.",
    )
    kubernetes_namespace: str | None = Field(
        default=None,
        description="Namespace of the training Jobs; default: the worker pod's (POD_NAMESPACE, "
        "the service account's), else the kubeconfig context's.",
    )
    kubernetes_kubeconfig: Path | None = Field(
        default=None,
        description="kubeconfig file to use outside a cluster; default: in-cluster config, else "
        "KUBECONFIG or ~/.kube/config.",
    )
    kubernetes_image: str = Field(
        default="", description="Image of the training pods (the worker image, CUDA build)."
    )
    kubernetes_artifacts_claim: str | None = Field(
        default=None,
        description="PVC holding the artifact store, mounted in the training pods at "
        "`artifact_dir` (ReadWriteMany: every node writes to it).",
    )
    kubernetes_gpu_resource: str = Field(
        default="nvidia.com/gpu", description="Extended resource name of a GPU."
    )
    kubernetes_gpu_node_selector: dict[str, str] = Field(
        default_factory=dict, description="nodeSelector of GPU training pods, as JSON."
    )
    kubernetes_gpu_tolerations: list[dict[str, str]] = Field(
        default_factory=list, description="Tolerations of GPU training pods, as JSON."
    )
    kubernetes_service_account: str | None = Field(
        default=None, description="Service account of the training pods (they need no API token)."
    )
    kubernetes_queue_name: str | None = Field(
        default=None,
        description="Kueue LocalQueue: the Job is created suspended and admitted as a whole "
        "(gang scheduling).",
    )
    kubernetes_priority_class: str | None = Field(
        default=None, description="priorityClassName of the training pods."
    )
    kubernetes_backoff_limit: int = Field(
        default=2,
        ge=0,
        le=100,
        description="Restarts one cluster attempt survives (its pods start again from the "
        "last checkpoint) before the attempt fails; the Job's backoffLimit is this × nodes, "
        "since one node's failure takes every node's processes down with it.",
    )
    kubernetes_ttl_seconds: int = Field(
        default=3600, ge=0, description="ttlSecondsAfterFinished of the training Jobs."
    )
    kubernetes_partial_scheduling_seconds: float = Field(
        default=600.0,
        gt=0,
        description="Fail an attempt whose pods stay partially scheduled (some placed, some "
        "not) this long, instead of holding the placed nodes forever.",
    )
    kubernetes_watch_seconds: int = Field(
        default=10,
        ge=1,
        description="Longest wait on one watch of the pods; stop requests are seen this often.",
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once from the environment."""
    return Settings()
