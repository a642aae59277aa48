"""The Helm chart: lint, render every values variant, validate every object offline, and hold the
rendered objects to the properties ARCHITECTURE.md §7 promises."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from vlarena.serving.config import ServingSettings
from vlarena.settings import Settings

from .rendering import (
    CHART,
    CI_VALUES,
    KUBE_VERSION,
    NODE_MODULES,
    RELEASE,
    ROOT,
    api_versions_of,
    by_kind,
    container,
    env_of,
    full,
    helm,
    named,
    pod_spec,
    render,
    render_ci,
    require_tool,
)

CUSTOM_APIS = ("monitoring.coreos.com/", "keda.sh/")
WORKLOADS = ("Deployment", "StatefulSet")
COMPONENTS = ("gateway", "worker", "triton", "redis")
VARIANTS = ["default", *(p.name.removesuffix("-values.yaml") for p in CI_VALUES)]


def render_variant(variant: str) -> list[dict[str, Any]]:
    return render() if variant == "default" else render_ci(variant)


def all_containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(obj)
    return spec.get("initContainers", []) + spec["containers"]


def workloads(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] in WORKLOADS]


def gpu_resource(c: dict[str, Any]) -> Any:
    return c["resources"].get("limits", {}).get("nvidia.com/gpu")


# Lint and offline validation.


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=lambda p: p.name if p else "default")
def test_chart_lints_strictly(values: Path | None) -> None:
    args = ["lint", "--strict", "--kube-version", KUBE_VERSION]
    result = helm(*args, *(["-f", str(values)] if values else []), check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("kube_version", [KUBE_VERSION, kubernetes_validate.latest_version()])
def test_every_builtin_object_validates_strictly(variant: str, kube_version: str) -> None:
    objects = [o for o in render_variant(variant) if not o["apiVersion"].startswith(CUSTOM_APIS)]
    assert objects
    for obj in objects:
        # SchemaNotFoundError ("couldn't find schema") fails the test like any invalid object.
        kubernetes_validate.validate(obj, kube_version, strict=True)


def test_custom_resources_validate_against_their_crds() -> None:
    custom = [
        o
        for variant in VARIANTS
        for o in render_variant(variant)
        if o["apiVersion"].startswith(CUSTOM_APIS)
    ]
    kinds = {o["kind"] for o in custom}
    assert {"ServiceMonitor", "ScaledObject"} <= kinds
    result = subprocess.run(
        [
            require_tool("node"),
            str(Path(__file__).with_name("validate_custom_resources.mjs")),
            str(NODE_MODULES),
        ],
        input=json.dumps(custom),
        capture_output=True,
        text=True,
        check=True,
    )
    verdicts = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(verdicts) == len(custom)
    assert [v for v in verdicts if v["error"]] == []


@pytest.mark.parametrize("variant", VARIANTS)
def test_no_object_hard_codes_a_namespace(variant: str) -> None:
    for obj in render_variant(variant):
        assert "namespace" not in obj["metadata"], obj["metadata"]["name"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_object_carries_the_standard_labels(variant: str) -> None:
    required = {
        "app.kubernetes.io/name": "vlarena",
        "app.kubernetes.io/instance": RELEASE,
        "app.kubernetes.io/managed-by": "Helm",
        "app.kubernetes.io/part-of": "vlarena",
    }
    for obj in render_variant(variant):
        labels = obj["metadata"]["labels"]
        assert required.items() <= labels.items(), obj["metadata"]["name"]
        assert labels["app.kubernetes.io/version"]
    for obj in workloads(render_variant(variant)):
        template_labels = obj["spec"]["template"]["metadata"]["labels"]
        assert obj["spec"]["selector"]["matchLabels"].items() <= template_labels.items()
        assert template_labels["app.kubernetes.io/component"] in COMPONENTS


# Components and their switches.


@pytest.mark.parametrize("component", COMPONENTS)
def test_each_component_is_switched_off_by_its_enabled_value(component: str) -> None:
    before = render()
    extra = ['externalRedis.url="redis://cache:6379/0"'] if component == "redis" else []
    after = render(set_json=[f"{component}.enabled=false", *extra])
    label = "app.kubernetes.io/component"

    def components(objects: list[dict[str, Any]]) -> set[str]:
        return {o["metadata"]["labels"].get(label) for o in objects}

    assert component in components(before)
    assert component not in components(after)
    assert components(after) >= components(before) - {component}


def test_disabling_redis_needs_an_external_one() -> None:
    result = helm("template", RELEASE, "--set", "redis.enabled=false", check=False)
    assert result.returncode != 0
    assert "externalRedis" in result.stderr
    objects = render(set_json=["redis.enabled=false", 'externalRedis.url="redis://cache:6379/1"'])
    env = env_of(container(named(objects, "Deployment", full("gateway")), "gateway"))
    assert env["VLARENA_REDIS_URL"] == "redis://cache:6379/1"


# GPU scheduling.


def gpu_scheduled(obj: dict[str, Any]) -> bool:
    spec = pod_spec(obj)
    selects = spec.get("nodeSelector", {}).get("vlarena.dev/node-pool") == "gpu"
    tolerates = any(t.get("key") == "nvidia.com/gpu" for t in spec.get("tolerations", []))
    asks = any(gpu_resource(c) for c in all_containers(obj))
    assert selects == tolerates == asks, f"{obj['metadata']['name']}: partial GPU scheduling"
    return asks


def test_only_triton_runs_on_the_gpu_pool_by_default(default_objects: list[dict[str, Any]]) -> None:
    on_gpu = {o["metadata"]["name"] for o in workloads(default_objects) if gpu_scheduled(o)}
    assert on_gpu == {full("triton")}
    triton = named(default_objects, "Deployment", full("triton"))
    assert gpu_resource(container(triton, "triton")) == 1
    assert gpu_resource(container(triton, "triton-sync")) is None


def test_gpu_worker_pool_runs_the_cuda_image_on_the_gpu_pool() -> None:
    objects = render_ci("gpu-workers")
    on_gpu = {o["metadata"]["name"] for o in workloads(objects) if gpu_scheduled(o)}
    assert on_gpu == {full("triton"), full("worker-gpu")}
    gpu_worker = container(named(objects, "Deployment", full("worker-gpu")), "worker")
    assert gpu_worker["image"].endswith("-cuda")
    assert env_of(gpu_worker)["VLARENA_WORKER_QUEUES"] == "gpu"
    assert env_of(gpu_worker)["VLARENA_DEVICE"] == "cuda"
    cpu_worker = container(named(objects, "Deployment", full("worker-cpu")), "worker")
    # The CPU pool launches multi-node jobs on Kubernetes too (worker.kubernetes.enabled).
    assert env_of(cpu_worker)["VLARENA_WORKER_QUEUES"] == "cpu,cluster"
    assert env_of(cpu_worker)["VLARENA_KUBERNETES_ENABLED"] == "true"


def test_nothing_runs_on_the_gpu_pool_with_gpus_off() -> None:
    objects = render_ci("gpu-off")
    assert not [o for o in workloads(objects) if gpu_scheduled(o)]
    triton = container(named(objects, "Deployment", full("triton")), "triton")
    assert "--allow-gpu-metrics=false" in triton["args"]


# Autoscaling.


def test_gateway_scales_on_cpu_and_requests_per_second(
    default_objects: list[dict[str, Any]],
) -> None:
    hpa = named(default_objects, "HorizontalPodAutoscaler", full("gateway"))
    assert (
        hpa["spec"]["scaleTargetRef"]["name"]
        == named(default_objects, "Deployment", full("gateway"))["metadata"]["name"]
    )
    metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert metrics["Resource"]["resource"]["name"] == "cpu"
    assert metrics["Pods"]["pods"]["metric"]["name"] == "vlarena_http_requests_per_second"
    assert "replicas" not in named(default_objects, "Deployment", full("gateway"))["spec"]


def test_triton_scales_on_queue_time(default_objects: list[dict[str, Any]]) -> None:
    hpa = named(default_objects, "HorizontalPodAutoscaler", full("triton"))
    (metric,) = hpa["spec"]["metrics"]
    assert metric["pods"]["metric"]["name"] == "vlarena_triton_queue_time_us"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": full("triton"),
    }


@pytest.mark.parametrize("variant", VARIANTS)
def test_workers_scale_through_keda_or_an_external_metric_never_both(variant: str) -> None:
    objects = render_variant(variant)
    pools = [
        o["metadata"]["name"]
        for o in by_kind(objects, "Deployment")
        if "worker-" in o["metadata"]["name"]
    ]
    hpas = {
        o["spec"]["scaleTargetRef"]["name"] for o in by_kind(objects, "HorizontalPodAutoscaler")
    }
    scaled = {o["spec"]["scaleTargetRef"]["name"] for o in by_kind(objects, "ScaledObject")}
    assert not hpas & scaled
    for pool in pools:
        assert (pool in hpas) + (pool in scaled) <= 1


def test_worker_hpa_targets_its_queues_demand(default_objects: list[dict[str, Any]]) -> None:
    hpa = named(default_objects, "HorizontalPodAutoscaler", full("worker-cpu"))
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "External"
    assert metric["external"]["metric"]["name"] == "vlarena_worker_demand"
    assert metric["external"]["metric"]["selector"]["matchLabels"] == {"queue": "cpu"}
    # Scale-in is slow and one pod at a time: a removed worker must checkpoint its job.
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 600


def test_keda_scales_each_pool_on_its_queue_and_may_reach_zero() -> None:
    objects = render_ci("keda")
    assert not [
        h for h in by_kind(objects, "HorizontalPodAutoscaler") if "worker" in h["metadata"]["name"]
    ]
    gpu = named(objects, "ScaledObject", full("worker-gpu"))
    assert gpu["spec"]["minReplicaCount"] == 0
    (trigger,) = gpu["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    query = trigger["metadata"]["query"]
    assert (
        'queue="gpu"' in query and "vlarena_queue_jobs" in query and "vlarena_worker_busy" in query
    )
    assert 'namespace="ml-serving"' in query


def test_keda_without_its_api_still_renders_for_an_explicit_error_at_install() -> None:
    # The ScaledObject renders from values alone, so a cluster without KEDA fails loudly at
    # install ("no matches for kind ScaledObject") instead of running unscaled workers.
    objects = render(set_json=['worker.autoscaling.engine="keda"'])
    assert by_kind(objects, "ScaledObject")


def test_hpa_engine_refuses_scale_to_zero() -> None:
    result = helm(
        "template", RELEASE, "--set", "worker.pools.cpu.autoscaling.minReplicas=0", check=False
    )
    assert result.returncode != 0
    assert "keda" in result.stderr


# Pods: probes, security, resources, shutdown.


def test_probes(default_objects: list[dict[str, Any]]) -> None:
    gateway = container(named(default_objects, "Deployment", full("gateway")), "gateway")
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    triton = container(named(default_objects, "Deployment", full("triton")), "triton")
    assert triton["startupProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert triton["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert triton["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    startup = triton["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300, "big models need minutes"
    worker = container(named(default_objects, "Deployment", full("worker-cpu")), "worker")
    assert worker["livenessProbe"]["httpGet"]["port"] == "metrics"
    redis = container(named(default_objects, "StatefulSet", full("redis")), "redis")
    assert redis["readinessProbe"]["exec"]["command"][-1] == "ping"


def test_triton_serves_the_standard_ports_in_explicit_mode(
    default_objects: list[dict[str, Any]],
) -> None:
    triton = container(named(default_objects, "Deployment", full("triton")), "triton")
    assert {p["name"]: p["containerPort"] for p in triton["ports"]} == {
        "http": 8000,
        "grpc": 8001,
        "metrics": 8002,
    }
    assert triton["command"] == ["tritonserver"]
    assert "--model-control-mode=explicit" in triton["args"]
    sync = container(named(default_objects, "Deployment", full("triton")), "triton-sync")
    assert sync["args"] == ["triton-sync"]
    assert "torch" not in sync["image"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_container_is_locked_down_and_sized(variant: str) -> None:
    for obj in workloads(render_variant(variant)):
        pod = pod_spec(obj)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        for c in all_containers(obj):
            where = f"{obj['metadata']['name']}/{c['name']}"
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert sc.get("runAsUser", pod["securityContext"].get("runAsUser", 0)) != 0, where
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= c["resources"][kind].keys(), where


def test_workers_get_time_to_checkpoint_on_scale_in(default_objects: list[dict[str, Any]]) -> None:
    worker = named(default_objects, "Deployment", full("worker-cpu"))
    assert pod_spec(worker)["terminationGracePeriodSeconds"] >= 600
    assert worker["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_only_workers_hold_an_api_token(default_objects: list[dict[str, Any]]) -> None:
    for obj in workloads(default_objects):
        is_worker = "worker" in obj["metadata"]["name"]
        assert pod_spec(obj)["automountServiceAccountToken"] is is_worker, obj["metadata"]["name"]
    role = named(default_objects, "Role", full("worker"))
    assert {r["apiGroups"][0] + "/" + r["resources"][0] for r in role["rules"]} == {
        "batch/jobs",
        "/pods",
        "/pods/log",
        "/services",
    }


def test_workers_export_int8_weights_for_gpus_unless_told_otherwise(
    default_objects: list[dict[str, Any]],
) -> None:
    worker = named(default_objects, "Deployment", full("worker-cpu"))
    assert env_of(pod_spec(worker)["containers"][0])["VLARENA_INT8_WEIGHTS"] == "full"
    cpu_served = render(set_json=['config.int8Weights="reduced"'])
    worker = named(cpu_served, "Deployment", full("worker-cpu"))
    assert env_of(pod_spec(worker)["containers"][0])["VLARENA_INT8_WEIGHTS"] == "reduced"


def test_data_volumes_are_the_roots_submitted_jobs_read_mounted_read_only(
    default_objects: list[dict[str, Any]],
) -> None:
    worker = named(default_objects, "Deployment", full("worker-cpu"))
    env = env_of(pod_spec(worker)["containers"][0])
    assert json.loads(env["VLARENA_DATA_ROOTS"]) == []
    assert env["VLARENA_ALLOW_IMAGE_URLS"] == "false"
    volume = {"name": "coco", "mountPath": "/data/coco", "claimName": "coco-datasets"}
    objects = render(
        set_json=[f"data.volumes=[{json.dumps(volume)}]", "data.imageUrls.enabled=true"]
    )
    for name in (full("gateway"), full("worker-cpu")):
        pod = pod_spec(named(objects, "Deployment", name))
        env = env_of(pod["containers"][0])
        assert json.loads(env["VLARENA_DATA_ROOTS"]) == ["/data/coco"], name
        assert env["VLARENA_ALLOW_IMAGE_URLS"] == "true"
        assert int(env["VLARENA_IMAGE_URL_MAX_BYTES"]) > 0
        mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "data-coco")
        assert mount == {"name": "data-coco", "mountPath": "/data/coco", "readOnly": True}
        claim = next(v for v in pod["volumes"] if v["name"] == "data-coco")
        assert claim["persistentVolumeClaim"] == {"claimName": "coco-datasets", "readOnly": True}


def test_the_gateway_gets_its_request_limits_from_the_chart(
    default_objects: list[dict[str, Any]],
) -> None:
    gateway = named(default_objects, "Deployment", full("gateway"))
    env = env_of(pod_spec(gateway)["containers"][0])
    assert env["VLARENA_MAX_BODY_BYTES"] == "1048576"
    assert int(env["VLARENA_RATE_LIMIT_REQUESTS"]) > 0
    assert int(env["VLARENA_MAX_ACTIVE_JOBS_PER_CALLER"]) > 0
    objects = render(set_json=["gateway.limits.rateLimitRequests=0"])
    gateway = named(objects, "Deployment", full("gateway"))
    assert env_of(pod_spec(gateway)["containers"][0])["VLARENA_RATE_LIMIT_REQUESTS"] == "0"


# Settings and secrets.


KNOWN_SETTINGS = {
    f"VLARENA_{name.upper()}"
    for fields in (Settings.model_fields, ServingSettings.model_fields)
    for name in fields
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_vlarena_variable_the_chart_sets_is_a_setting(variant: str) -> None:
    known = KNOWN_SETTINGS
    for obj in workloads(render_variant(variant)):
        for c in all_containers(obj):
            unknown = {n for n in env_of(c) if n.startswith("VLARENA_")} - known
            assert not unknown, f"{obj['metadata']['name']}/{c['name']}: {unknown}"


def test_api_keys_come_from_a_mounted_secret_of_digests() -> None:
    digest = "a" * 64
    objects = render(
        set_json=[f'auth.apiKeys=[{{"name": "ci", "sha256": "{digest}", "scopes": ["submit"]}}]']
    )
    gateway = named(objects, "Deployment", full("gateway"))
    env = env_of(container(gateway, "gateway"))
    assert "VLARENA_API_KEYS" not in env
    mount = next(
        m for m in container(gateway, "gateway")["volumeMounts"] if m["name"] == "api-keys"
    )
    assert env["VLARENA_API_KEYS_FILE"].startswith(mount["mountPath"] + "/")
    secret_name = next(v for v in pod_spec(gateway)["volumes"] if v["name"] == "api-keys")[
        "secret"
    ]["secretName"]
    secret = named(objects, "Secret", secret_name)
    assert "stringData" not in secret
    (entries,) = [json.loads(base64.b64decode(v)) for v in secret["data"].values()]
    assert entries == [{"name": "ci", "sha256": digest, "scopes": ["submit"]}]


def test_an_existing_secret_replaces_the_charts_own() -> None:
    objects = render_ci("ingress")
    assert not by_kind(objects, "Secret")
    gateway = named(objects, "Deployment", full("gateway"))
    volume = next(v for v in pod_spec(gateway)["volumes"] if v["name"] == "api-keys")
    assert volume["secret"]["secretName"] == "vlarena-api-keys"


def test_no_secret_value_is_inlined_in_any_pod() -> None:
    for obj in workloads(render_ci("minimal")):
        for c in all_containers(obj):
            for name, value in env_of(c).items():
                if name.endswith(("_KEY", "_KEYS", "_PASSWORD", "_TOKEN", "_SECRET", "_REDIS_URL")):
                    assert not isinstance(value, str), (
                        f"{name} inlined in {obj['metadata']['name']}"
                    )
    redis_url = env_of(
        container(named(render_ci("minimal"), "Deployment", full("gateway")), "gateway")
    )["VLARENA_REDIS_URL"]
    assert redis_url == {"secretKeyRef": {"name": "vlarena-redis", "key": "url"}}


# Availability and network.


def selects(selector: dict[str, str], obj: dict[str, Any]) -> bool:
    return selector.items() <= obj["spec"]["template"]["metadata"]["labels"].items()


def test_pdbs_cover_gateway_and_triton(default_objects: list[dict[str, Any]]) -> None:
    pdbs = by_kind(default_objects, "PodDisruptionBudget")
    for component in ("gateway", "triton"):
        deployment = named(default_objects, "Deployment", full(component))
        assert [p for p in pdbs if selects(p["spec"]["selector"]["matchLabels"], deployment)], (
            component
        )


def test_network_policies_guard_every_component(default_objects: list[dict[str, Any]]) -> None:
    policies = by_kind(default_objects, "NetworkPolicy")
    for obj in workloads(default_objects):
        assert [p for p in policies if selects(p["spec"]["podSelector"]["matchLabels"], obj)], obj[
            "metadata"
        ]["name"]
    redis = named(default_objects, "NetworkPolicy", full("redis"))
    (rule,) = redis["spec"]["ingress"]
    sources = {p["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for p in rule["from"]}
    assert sources == {"gateway", "worker", "triton"}
    triton = named(default_objects, "NetworkPolicy", full("triton"))
    from_gateway = triton["spec"]["ingress"][0]
    assert (
        from_gateway["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        == "gateway"
    )


def test_redis_keeps_an_append_only_file_on_a_volume(default_objects: list[dict[str, Any]]) -> None:
    redis = named(default_objects, "StatefulSet", full("redis"))
    (claim,) = redis["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    config = named(default_objects, "ConfigMap", full("redis"))["data"]["redis.conf"]
    assert "appendonly yes" in config.splitlines()
    artifacts = named(default_objects, "PersistentVolumeClaim", full("artifacts"))
    assert artifacts["spec"]["accessModes"] == ["ReadWriteMany"]


_BYTES = {"kb": 1024, "mb": 1024**2, "gb": 1024**3, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}


def _bytes(quantity: str) -> int:
    number = quantity.rstrip("kmgbKMGi")
    return int(number) * _BYTES[quantity[len(number) :]]


def test_redis_refuses_writes_below_its_memory_limit_and_never_evicts(
    default_objects: list[dict[str, Any]],
) -> None:
    config = named(default_objects, "ConfigMap", full("redis"))["data"]["redis.conf"].splitlines()
    assert "maxmemory-policy noeviction" in config
    (maxmemory,) = [line.split()[1] for line in config if line.startswith("maxmemory ")]
    redis = named(default_objects, "StatefulSet", full("redis"))
    limit = container(redis, "redis")["resources"]["limits"]["memory"]
    # Room above maxmemory for the AOF rewrite's fork and client buffers: an OOM kill would
    # replay the same file into a crash loop.
    assert _bytes(maxmemory) <= 0.8 * _bytes(limit)
    objects = render(set_json=['redis.maxmemory="2gb"', 'redis.resources.limits.memory="3Gi"'])
    config = named(objects, "ConfigMap", full("redis"))["data"]["redis.conf"].splitlines()
    assert "maxmemory 2gb" in config


def test_finished_jobs_expire_after_the_charts_retention(
    default_objects: list[dict[str, Any]],
) -> None:
    for component in ("gateway", "worker-cpu"):
        workload = named(default_objects, "Deployment", full(component))
        env = env_of(pod_spec(workload)["containers"][0])
        assert env["VLARENA_JOB_RETENTION_SECONDS"] == str(7 * 24 * 3600)


def test_ingress_terminates_tls_for_the_gateway() -> None:
    objects = render_ci("ingress")
    ingress = named(objects, "Ingress", f"{RELEASE}-vlarena")
    assert ingress["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == "letsencrypt"
    (tls,) = ingress["spec"]["tls"]
    assert tls["hosts"] == ["vlarena.example.org"]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    service = named(objects, "Service", backend["name"])
    assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
    assert not by_kind(render(), "Ingress")


# Monitoring objects.


def test_service_monitors_only_where_the_operator_api_exists(
    default_objects: list[dict[str, Any]],
) -> None:
    assert not by_kind(default_objects, "ServiceMonitor")
    assert not by_kind(render_ci("monitoring-off"), "ServiceMonitor")
    objects = render_ci("monitoring")
    monitors = by_kind(objects, "ServiceMonitor")
    assert {m["metadata"]["name"] for m in monitors} == {
        full(c) for c in ("gateway", "worker", "triton")
    }
    services = by_kind(objects, "Service")
    for monitor in monitors:
        selector = monitor["spec"]["selector"]["matchLabels"]
        matched = [s for s in services if selector.items() <= s["metadata"]["labels"].items()]
        assert matched, monitor["metadata"]["name"]
        ports = {p["name"] for s in matched for p in s["spec"]["ports"]}
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= ports
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_worker_metrics_are_labelled_with_their_queue() -> None:
    objects = render_ci("gpu-workers") + render_ci("monitoring")
    monitor = named(render_ci("monitoring"), "ServiceMonitor", full("worker"))
    (relabel,) = monitor["spec"]["endpoints"][0]["relabelings"]
    assert relabel["targetLabel"] == "queue"
    label = relabel["sourceLabels"][0].removeprefix("__meta_kubernetes_service_label_")
    for service in by_kind(objects, "Service"):
        if service["metadata"]["name"].startswith(full("worker-")):
            labels = {
                k.replace(".", "_").replace("/", "_"): v
                for k, v in service["metadata"]["labels"].items()
            }
            assert labels[label] in {"cpu", "gpu"}


def test_ci_values_files_name_only_known_apis() -> None:
    for path in CI_VALUES:
        assert set(api_versions_of(path)) <= {"monitoring.coreos.com/v1", "keda.sh/v1alpha1"}, (
            path.name
        )
    assert (ROOT / "charts" / "vlarena") == CHART
