"""The worker image started as the chart's CPU worker pod: it takes a tiny train job submitted
through the gateway image, trains, evaluates, exports and registers the model, and leaves the
artifacts on the artifact store's claim, written as the chart's user."""

from __future__ import annotations

from typing import Any

from .conftest import cluster_of


def test_worker_trains_a_tiny_job_and_registers_its_model(trained: dict[str, Any]) -> None:
    job = trained["job"]
    assert job["state"] == "SUCCEEDED", f"{job.get('error')}\n{trained['worker_logs']}"
    assert [a["outcome"] for a in job["attempts"]] == ["succeeded"]
    assert job["models"] == [{"name": "image-tests", "version": 1}]
    assert "caption_of_10" in job["metrics"]["values"]


def test_worker_leaves_its_artifacts_on_the_claim(
    trained: dict[str, Any], stack: dict[str, Any]
) -> None:
    paths = {item["path"] for item in trained["artifacts"]["items"]}
    assert {"metrics.json", "run/model.pt", "run/result.json"} <= paths
    assert any(p.endswith("export/serving.json") for p in paths), sorted(paths)
    assert set(trained["artifacts"]["declared"]) <= paths
    user = stack["containers"]["worker"].pod["securityContext"]["runAsUser"]
    for path in ("metrics.json", "run/model.pt"):
        file = trained["host_root"] / path
        assert file.is_file() and file.stat().st_size > 0, file
        assert file.stat().st_uid == user, f"{path} is not the worker user's"


def test_worker_serves_its_metrics_on_the_probed_port(stack: dict[str, Any]) -> None:
    import urllib.request

    worker = stack["containers"]["worker"]
    url = cluster_of(stack).url(worker.port("metrics"), "/metrics")
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    assert "vlarena_worker_busy" in text
