"""Multi-node jobs wait in their own queue, served only by workers that may launch them."""

from __future__ import annotations

import pytest

from vlarena.worker.app import resolve_queues


def test_only_kubernetes_workers_serve_the_cluster_queue() -> None:
    assert resolve_queues("cpu,cluster", kubernetes=True) == ["cpu", "cluster"]
    assert resolve_queues("auto", kubernetes=True)[-1] == "cluster"
    assert "cluster" not in resolve_queues("auto", kubernetes=False)
    with pytest.raises(ValueError, match="VLARENA_KUBERNETES_ENABLED"):
        resolve_queues("cpu,cluster", kubernetes=False)
    with pytest.raises(ValueError, match="must be among"):
        resolve_queues("tpu")
