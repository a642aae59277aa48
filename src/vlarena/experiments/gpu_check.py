"""`vlarena gpu-check`: proves the CUDA path end to end on a GPU machine in about a minute.

It checks the attention kernels on the GPU against the CPU, then runs a tiny compare job (both
families, fashion-grid, a few thousand samples) on CUDA through the same `run_job` the
platform uses, and prints one JSON summary: device, parity, samples/s and quality per family.
Exit status 0 when every check passed, 1 when one failed, 2 when there is no CUDA device.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from vlarena.events import ignore
from vlarena.experiments.jobs import run_job
from vlarena.files import read_json
from vlarena.jobs.spec import parse_job_spec
from vlarena.rundirs import JobDir

PARITY_TOLERANCE = 1e-4
CHECK_SPEC: dict[str, Any] = {
    "type": "compare",
    "model": {"config": {"preset": "tiny"}},
    "dataset": {"name": "fashion-grid", "options": {"n_train": 512, "n_val": 64, "n_test": 128}},
    "hyperparameters": {"batchSize": 64, "warmupSteps": 10, "learningRate": 2e-3},
    "budget": {"samples": 16384},
    "evaluation": {"maxImages": 128, "retrievalPools": [100], "curvePoints": 2},
    "seeds": 1,
    "report": False,
    "export": False,
}


def attention_parity(device: torch.device) -> float:
    """Max abs difference between multi-head attention on `device` and on the CPU."""
    from vlarena.nn import MultiHeadAttention

    torch.manual_seed(0)
    mha = MultiHeadAttention(64, 4).eval()
    x = torch.randn(4, 16, 64)
    mask = torch.zeros(4, 16, dtype=torch.bool)
    mask[:, 12:] = True  # padded keys
    with torch.no_grad():
        cpu, _ = mha(x, key_padding_mask=mask)
        gpu, _ = mha.to(device)(x.to(device), key_padding_mask=mask.to(device))
    return float((cpu - gpu.cpu()).abs().max())


def gpu_check(out: Path) -> int:
    if not torch.cuda.is_available():
        print("gpu-check: no CUDA device is visible to torch; run it on a GPU machine")
        return 2
    device = torch.device("cuda", 0)
    os.environ["VLARENA_DEVICE"] = "cuda"
    summary: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }
    parity = attention_parity(device)
    summary["attentionMaxAbsDiff"] = parity
    started = time.perf_counter()
    result = run_job(parse_job_spec(CHECK_SPEC), out, on_event=ignore)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    metrics = read_json(JobDir(out).metrics)
    families = {}
    for family, body in metrics["families"].items():
        seed = body["seeds"][0]
        families[family] = {
            "samplesPerSecond": round(seed["samplesPerSecond"], 1),
            "metrics": {k: round(v["value"], 4) for k, v in seed["metrics"].items()},
        }
    summary["families"] = families
    summary["models"] = [m["name"] for m in result["models"]]
    ok = parity <= PARITY_TOLERANCE and len(families) == 2
    summary["ok"] = ok
    print(json.dumps(summary, indent=1))
    sys.stdout.flush()
    return 0 if ok else 1
