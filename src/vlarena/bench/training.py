"""`make bench-training`: model FLOP utilisation of each family's training step.

Each family at the `small` preset trains on fashion-grid 2×2 captions over random
EfficientNet-Lite0 features (16 tokens of 1,280: the frozen encoder's features are cached in a
real run, so the step is what remains), with AdamW, as the training loop runs it; VL-JEPA's
Y-decoder stage too. Per stage: FLOPs per sample (`torch.utils.flop_counter`: the forward and
backward matrix products), samples per second as a median with its 95% interval over rounds,
MFU against the machine's fp32 peak (`bench-limits`), and a profile of where the step's time
goes (matrix products, attention, element-wise work, the optimiser). Goal: ≥ 30% MFU for the
VL-JEPA predictor and the token decoder at batch 64.

Run with `python -m vlarena.bench.training [--batch N] [--steps N] [--rounds N] [--out DIR]`;
writes `<out>/training.json` and exits non-zero when a goal is missed.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from vlarena.bench.limits import announce
from vlarena.bench.scoring import fashion_captions
from vlarena.evaluation.statistics import median_interval
from vlarena.files import write_json
from vlarena.models.registry import build_model, make_config
from vlarena.nn.flops import count_flops, utilisation
from vlarena.training.optim import make_optimizer

MFU_GOAL = 0.30
# Operator name fragments → the share of the step they stand for in the profile.
CATEGORIES = (
    ("matrix products", ("addmm", "mm", "bmm", "matmul", "linear")),
    ("attention", ("attention", "softmax")),
    ("optimiser", ("adam", "_foreach", "lerp", "sqrt", "addcdiv", "addcmul")),
    ("normalisation", ("layer_norm", "norm")),
)


def _category(name: str) -> str:
    lowered = name.lower()
    for label, fragments in CATEGORIES:
        if any(f in lowered for f in fragments):
            return label
    return "element-wise and other"


def profile_step(step: Callable[[], Any], steps: int = 3) -> dict[str, float]:
    """Share of the CPU time of `steps` steps per category of operator."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    shares: dict[str, float] = {}
    total = 0.0
    for event in prof.key_averages():
        if event.key.startswith("aten::"):
            shares[_category(event.key)] = (
                shares.get(_category(event.key), 0.0) + event.self_cpu_time_total
            )
            total += event.self_cpu_time_total
    return {k: v / total for k, v in sorted(shares.items(), key=lambda kv: -kv[1])} if total else {}


def measure(
    name: str, step: Callable[[], Any], batch: int, steps: int, rounds: int, peak: float
) -> dict[str, Any]:
    step()  # warm-up
    _, flops = count_flops(step)
    rates = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(steps):
            step()
        rates.append(steps * batch / (time.perf_counter() - started))
    interval = median_interval(rates)
    per_sample = flops / batch
    return {
        "stage": name,
        "batch": batch,
        "flopsPerSample": per_sample,
        "samplesPerSecond": interval.as_dict(),
        "mfu": utilisation(per_sample, interval.median, peak),
        "mfuInterval": [
            utilisation(per_sample, interval.low, peak),
            utilisation(per_sample, interval.high, peak),
        ],
        "profile": profile_step(step),
    }


def family_steps(family: str, batch: int) -> list[tuple[str, Callable[[], Any], int]]:
    """(stage, one training step, samples per step) of a family at the small preset."""
    torch.manual_seed(0)
    captions = fashion_captions(2000)
    model = build_model(family, make_config(family, {"preset": "small"}), captions)
    model.prepare_texts(captions)
    model.train()
    opt = make_optimizer(model, 1e-3, 0.01, model.lr_multipliers())
    enc = model.x_encoder
    visual = torch.randn(batch, enc.num_tokens, enc.out_dim)
    texts = captions[:batch]

    def main_step() -> None:
        loss, _ = model(model.make_batch(visual, texts, [None] * batch))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    stages: list[tuple[str, Callable[[], Any], int]] = [("main", main_step, batch)]
    aux = model.auxiliary_stage(captions)
    if aux is not None:
        module = aux.module.requires_grad_(True).train()
        aux_opt = make_optimizer(module, aux.learning_rate, aux.weight_decay)
        gen = torch.Generator().manual_seed(0)

        def aux_step() -> None:
            loss = aux.loss(gen)
            aux_opt.zero_grad(set_to_none=True)
            loss.backward()
            aux_opt.step()

        stages.append((aux.name, aux_step, aux.batch_size))
    return stages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vlarena.bench.training", description=__doc__)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    args = parser.parse_args(argv)
    load, limits, peak = announce(args.out)
    results: dict[str, Any] = {"loadAverage": load, "limits": limits, "families": {}}
    met = True
    for family in ("token-vlm", "vl-jepa"):
        for stage, step, batch in family_steps(family, args.batch):
            r = measure(stage, step, batch, args.steps, args.rounds, peak)
            results["families"].setdefault(family, {})[stage] = r
            sps = r["samplesPerSecond"]
            goal = stage == "main"
            if goal:
                met &= r["mfu"] >= MFU_GOAL
            top = ", ".join(f"{k} {v:.0%}" for k, v in list(r["profile"].items())[:4])
            print(
                f"{family:9s} {stage:9s} batch {batch:3d}: {r['flopsPerSample'] / 1e6:7.1f} MFLOP/sample,"
                f" {sps['median']:7.1f} samples/s [{sps['low']:.1f}, {sps['high']:.1f}],"
                f" MFU {r['mfu']:.1%} [{r['mfuInterval'][0]:.1%}, {r['mfuInterval'][1]:.1%}]"
                + (f" = {r['mfu'] / MFU_GOAL:.2f} of the 30% goal" if goal else "")
                + f"; time: {top}"
            )
    write_json(args.out / "training.json", results)
    print(f"wrote {args.out / 'training.json'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
