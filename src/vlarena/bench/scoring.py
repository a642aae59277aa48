"""`make bench-scoring`: the token VLM's candidate scoring, over prefix trees against a full
decoder pass per (image, candidate) pair, side by side in one run.

The model is the bench's token VLM (`small` preset: d=256, 2 layers, 4 heads, FFN 1024, 16
visual tokens of EfficientNet-Lite0) over the caption vocabulary and over MiniLM's full
WordPiece vocabulary; its weights do not change the cost, so it is not trained. The candidates
are fashion-grid 2×2 captions ("a bag top left, a shirt top right, ..."), drawn as the test
split draws them. Two workloads per vocabulary:

- caption choice: 10 candidates per image, a different list for each image;
- retrieval: one pool of 100 captions scored against every image.

Each workload runs both scorers in alternating rounds (so a noisy neighbour slows both alike)
and prints pairs per second, the speed-up per round as a median with its 95% interval, the
FLOP rate against the machine's peak (`bench-limits`), and whether the two scorers agreed
within 1e-5. Then a retrieval pool of 1,000 captions with the caption vocabulary, timed over
`--pool-images` images of its 1,000 (the time for all 1,000 is extrapolated when fewer).

Run with `python -m vlarena.bench.scoring [--rounds N] [--pool-images N] [--out DIR]`; writes
`<out>/scoring.json` and exits non-zero when a target is missed: 10× the pairs per second of
the pass per pair, and the pool of 1,000 within 5 minutes.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlarena.bench.limits import announce
from vlarena.data.fashion_grid import CLASSES, caption_template, grid_slots
from vlarena.data.templates import fill_template
from vlarena.evaluation.statistics import median_interval
from vlarena.files import write_json
from vlarena.models.registry import build_model, make_config
from vlarena.models.token_vlm import TokenVLM
from vlarena.nn.flops import count_flops, utilisation

SPEEDUP_TARGET = 10.0
POOL = 1000
POOL_SECONDS_TARGET = 300.0
TOLERANCE = 1e-5
# Pairs per round of the reference: a few seconds each on two cores.
WORKLOADS = {
    "captions": {"caption-choice": 128, "retrieval-100": 24},
    "full": {"caption-choice": 24, "retrieval-100": 4},
}


def fashion_captions(n: int, seed: int = 0) -> list[str]:
    """`n` distinct 2×2 fashion-grid captions, items drawn uniformly per slot."""
    rng = np.random.default_rng(seed)
    slots = [slot for slot, _ in grid_slots(2)]
    template = caption_template(2)
    seen: dict[str, None] = {}
    while len(seen) < n:
        values = {slot: CLASSES[int(rng.integers(len(CLASSES)))] for slot in slots}
        seen[fill_template(template, values)] = None
    return list(seen)


def token_vlm(vocabulary: str, texts: Sequence[str], preset: str = "small") -> TokenVLM:
    torch.manual_seed(0)
    config = make_config("token-vlm", {"preset": preset, "vocabulary": vocabulary, "dropout": 0.0})
    model = build_model("token-vlm", config, texts)
    assert isinstance(model, TokenVLM)
    return model.eval()


@torch.no_grad()
def _memory(model: TokenVLM, images: int) -> torch.Tensor:
    """Projected visual tokens of random features: what scoring attends to."""
    return model.memory(torch.randn(images, model.x_encoder.num_tokens, model.x_encoder.out_dim))


def _timed(fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def workload(
    model: TokenVLM, name: str, images: int, captions: list[str], rounds: int, peak: float
) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    memory = _memory(model, images)
    if name == "caption-choice":
        cands: Any = [
            [captions[j] for j in rng.choice(len(captions), 10, False)] for _ in range(images)
        ]
        pairs = images * 10
    else:
        cands = captions[:100]
        pairs = images * 100
    text = model.text
    with torch.no_grad():
        (new, flops_new) = count_flops(lambda: text.score(memory, cands))
        (ref, flops_ref) = count_flops(lambda: text.score_pairs(memory, cands))
        rates: dict[str, list[float]] = {"tree": [], "pairs": []}
        for _ in range(rounds):
            _, seconds = _timed(lambda: text.score_pairs(memory, cands))
            rates["pairs"].append(pairs / seconds)
            _, seconds = _timed(lambda: text.score(memory, cands))
            rates["tree"].append(pairs / seconds)
    speedups = [t / p for t, p in zip(rates["tree"], rates["pairs"], strict=True)]
    diff = float((new - ref).abs().max())
    tree = median_interval(rates["tree"])
    ref_rate = median_interval(rates["pairs"])
    return {
        "pairs": pairs,
        "pairsPerSecond": {"tree": tree.as_dict(), "pairs": ref_rate.as_dict()},
        "speedup": median_interval(speedups).as_dict(),
        "flopsPerPair": {"tree": flops_new / pairs, "pairs": flops_ref / pairs},
        "utilisation": {
            "tree": utilisation(flops_new / pairs, tree.median, peak),
            "pairs": utilisation(flops_ref / pairs, ref_rate.median, peak),
        },
        # The most any scorer doing the tree's FLOPs could gain over the pass per pair here:
        # the tree's FLOPs at the machine's whole peak, against the pass per pair's rate.
        "speedupAtPeak": peak / (flops_new / pairs) / ref_rate.median,
        "maxAbsDifference": diff,
        "agrees": diff <= TOLERANCE,
    }


def pool_run(
    captions: list[str], images: int, preset: str = "small", peak: float | None = None
) -> dict[str, Any]:
    """The retrieval pool of 1,000 captions scored against `images` images, timed, and the
    time for 1,000 images. With the machine's `peak` FLOP/s, also the pool's FLOPs for 1,000
    images (counted on one image and on two: a shared part and a part per image) and the time
    they would take at that peak: below it no scorer of exact scores meets the target here."""
    model = token_vlm("captions", captions, preset)
    memory = _memory(model, images)
    pool = captions[:POOL]
    with torch.no_grad():
        _, seconds = _timed(lambda: model.text.score(memory, pool))
    total = seconds * POOL / images
    result: dict[str, Any] = {
        "images": images,
        "seconds": seconds,
        "secondsFor1000": total,
        "extrapolated": images < POOL,
        "pairsPerSecond": images * POOL / seconds,
        "met": total <= POOL_SECONDS_TARGET,
    }
    if peak:
        two = _memory(model, 2)
        with torch.no_grad():
            _, one_image = count_flops(lambda: model.text.score(two[:1], pool))
            _, two_images = count_flops(lambda: model.text.score(two, pool))
        per_image = two_images - one_image
        flops = one_image - per_image + POOL * per_image
        result |= {
            "flopsFor1000": flops,
            "secondsAtPeak": flops / peak,
            "utilisation": utilisation(flops / POOL, POOL / total, peak),
        }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vlarena.bench.scoring", description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--pool-images", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    args = parser.parse_args(argv)
    load, limits, peak = announce(args.out)
    captions = fashion_captions(POOL)
    results: dict[str, Any] = {"loadAverage": load, "limits": limits, "workloads": {}}
    met = True
    for vocabulary, sizes in WORKLOADS.items():
        model = token_vlm(vocabulary, captions)
        for name, images in sizes.items():
            r = workload(model, name, images, captions, args.rounds, peak)
            results["workloads"][f"{vocabulary}/{name}"] = r
            s = r["speedup"]
            ok = s["median"] >= SPEEDUP_TARGET and r["agrees"]
            met &= ok
            print(
                f"{vocabulary:8s} {name:15s} tree {r['pairsPerSecond']['tree']['median']:8.0f}"
                f" pairs/s, pass per pair {r['pairsPerSecond']['pairs']['median']:7.0f};"
                f" speed-up {s['median']:.2f}× [{s['low']:.2f}, {s['high']:.2f}]"
                f" = {s['median'] / SPEEDUP_TARGET:.2f} of the {SPEEDUP_TARGET:.0f}× target;"
                f" MFLOP/pair {r['flopsPerPair']['tree'] / 1e6:.1f} vs"
                f" {r['flopsPerPair']['pairs'] / 1e6:.1f}; MFU {r['utilisation']['tree']:.0%}"
                f" vs {r['utilisation']['pairs']:.0%}; max |Δ| {r['maxAbsDifference']:.1e}"
                f" {'ok' if ok else 'MISSED'}"
            )
            print(
                f"{'':24s} at this machine's peak the tree's FLOPs allow at most"
                f" {r['speedupAtPeak']:.2f}×"
                + (
                    ": the target is beyond this CPU's reach"
                    if r["speedupAtPeak"] < SPEEDUP_TARGET
                    else ""
                )
            )
    pool = pool_run(captions, args.pool_images, peak=peak)
    results["pool1000"] = pool
    met &= pool["met"]
    how = f"extrapolated from {pool['images']} images" if pool["extrapolated"] else "measured"
    print(
        f"retrieval pool of {POOL}, caption vocabulary: {pool['secondsFor1000']:.0f} s for"
        f" {POOL} images ({how}; {pool['pairsPerSecond']:.0f} pairs/s) ="
        f" {pool['secondsFor1000'] / POOL_SECONDS_TARGET:.2f} of the 5-minute target"
        f" {'ok' if pool['met'] else 'MISSED'}"
    )
    reach = "within" if pool["secondsAtPeak"] <= POOL_SECONDS_TARGET else "beyond"
    print(
        f"  its {pool['flopsFor1000'] / 1e12:.1f} TFLOP take {pool['secondsAtPeak']:.0f} s at"
        f" this machine's peak ({pool['utilisation']:.0%} of it used): the target is {reach}"
        " this CPU's reach"
    )
    write_json(args.out / "scoring.json", results)
    print(f"wrote {args.out / 'scoring.json'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
