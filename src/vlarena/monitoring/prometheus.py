"""Prometheus scrape configs: for docker-compose, for components on their default local ports,
and for `vlarena demo` (free ports), all from `scrape_config`."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vlarena.monitoring.rules import RULES_FILE, rule_groups
from vlarena.monitoring.yaml_files import dump_yaml

# Scrape job names; dashboards and rules do not depend on them (a cluster's ServiceMonitors
# name jobs after Services).
GATEWAY_JOB = "vlarena-gateway"
WORKER_JOB = "vlarena-worker"
TRITON_JOB = "triton"
PROMETHEUS_BINARY = "/usr/bin/prometheus"


def scrape_config(
    targets: dict[str, Sequence[str]],
    rule_files: Sequence[str],
    *,
    interval: str = "15s",
    discover_workers_by_dns: bool = False,
) -> dict[str, Any]:
    """A Prometheus config scraping `targets` (job name to `host:port` list) at `interval`.

    With `discover_workers_by_dns`, the worker job discovers every replica of the compose service `worker`
    by DNS instead of listing targets.
    """
    jobs: list[dict[str, Any]] = []
    for job, hosts in targets.items():
        entry: dict[str, Any] = {"job_name": job}
        if discover_workers_by_dns and job == WORKER_JOB:
            host, port = hosts[0].rsplit(":", 1)
            entry["dns_sd_configs"] = [{"names": [host], "type": "A", "port": int(port)}]
        else:
            entry["static_configs"] = [{"targets": list(hosts)}]
        jobs.append(entry)
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": list(rule_files),
        "scrape_configs": jobs,
    }


def compose_config() -> dict[str, Any]:
    """docker-compose.yml's Prometheus: the services by name, rules mounted from monitoring/rules."""
    return scrape_config(
        {
            "prometheus": ["localhost:9090"],
            GATEWAY_JOB: ["gateway:8080"],
            # Every replica of `docker compose up --scale worker=N`.
            WORKER_JOB: ["worker:9100"],
            TRITON_JOB: ["triton:8002"],
        },
        ["/etc/prometheus/rules/*.yml"],
        discover_workers_by_dns=True,
    )


def local_config(
    gateway: str = "127.0.0.1:8080",
    worker: str = "127.0.0.1:9100",
    triton: str = "127.0.0.1:8002",
    *,
    rule_files: Sequence[str] = ("../rules/*.yml",),
    interval: str = "15s",
) -> dict[str, Any]:
    """Components on one machine: `vlarena gateway`, a worker with
    VLARENA_WORKER_METRICS_PORT=9100 and `vlarena triton` on their default ports."""
    return scrape_config(
        {GATEWAY_JOB: [gateway], WORKER_JOB: [worker], TRITON_JOB: [triton]},
        rule_files,
        interval=interval,
    )


def prometheus_command(config: Path, data_dir: Path, port: int) -> list[str]:
    """The Debian `prometheus` binary serving `config` on 127.0.0.1:`port`."""
    binary = shutil.which("prometheus") or PROMETHEUS_BINARY
    return [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={data_dir}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--storage.tsdb.retention.time=1d",
    ]


def prepare_local(
    directory: Path, *, gateway: str, worker: str, triton: str, port: int, interval: str = "5s"
) -> list[str]:
    """Writes a config scraping the given targets, and vlarena's rules beside it, into
    `directory`; returns the command that starts Prometheus on 127.0.0.1:`port` with them."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / RULES_FILE).write_text(dump_yaml(rule_groups()))
    config = local_config(gateway, worker, triton, rule_files=[RULES_FILE], interval=interval)
    (directory / "prometheus.yml").write_text(dump_yaml(config))
    return prometheus_command(directory / "prometheus.yml", directory / "data", port)
