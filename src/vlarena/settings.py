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


class ApiKeyEntry(BaseModel):
    """One gateway API key: its name, the SHA-256 of its secret (or the secret) and its scopes."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    key: str | None = Field(
        default=None, min_length=16, description="The secret itself; hashed when loaded."
    )
    scopes: list[Literal["read", "submit", "admin"]] = Field(default_factory=lambda: ["read"])

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
    worker_queues: str = Field(
        default="auto",
        description="Queues a worker takes jobs from: 'cpu', 'gpu', 'cpu,gpu' or 'auto'.",
    )
    worker_metrics_port: int = Field(
        default=0, ge=0, le=65535, description="Port of a worker's /metrics; 0 disables it."
    )
    log_max_entries: int = Field(
        default=100_000, ge=100, description="Log lines and events kept per job (oldest dropped)."
    )
    api_url: str = Field(
        default="http://127.0.0.1:8080", description="Gateway the CLI client talks to."
    )
    api_key: str | None = Field(default=None, description="API key the CLI client sends.")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once from the environment."""
    return Settings()
