"""A submitted job's manifest is confined on the worker too: an image outside the roots, only
known once the worker reads the manifest, fails the job on its input, without a retry."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from PIL import Image
from platform_harness import (
    DATA_ROOT,
    TERMINAL,
    Gateway,
    WorkerPool,
    submit,
    tiny_train,
    wait_for_state,
)


def test_a_manifest_image_outside_the_roots_fails_the_job_without_retry(
    gateway: Gateway, workers: WorkerPool
) -> None:
    data = Path(tempfile.mkdtemp(prefix="vlarena-confined-", dir=DATA_ROOT))
    Image.new("RGB", (8, 8), (10, 200, 10)).save(data / "green.png")
    records = [
        {"id": "inside", "image": "green.png", "caption": "a green square"},
        {"id": "outside", "image": "/etc/hostname", "caption": "the host's name"},
    ]
    (data / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    workers.ensure(1)
    with gateway.client("alice") as client:
        job = submit(client, tiny_train(dataset={"uri": str(data)}, maxRetries=2))
        done = wait_for_state(client, job["id"], TERMINAL, 60)
    assert done["state"] == "FAILED" and done["retries"] == 0
    assert [a["outcome"] for a in done["attempts"]] == ["failed"]
    assert done["error"]["code"] == "InvalidInput"
    message = done["error"]["message"]
    assert 'line 2, field "image": /etc/hostname is outside the directories' in message
