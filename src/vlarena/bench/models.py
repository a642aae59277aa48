"""`make bench-models`: both model families on `fashion-grid` and `emoji`, side by side.

Each row is one training run through the same `run_job` the platform uses (cached frozen
EfficientNet-Lite0 features, the `small` preset: d=256, 2 layers), evaluated on the test split
with every metric beside its chance level and its z-score (standard errors above chance). The
rows on `fashion-grid` (2×2 grids, 8,000 training grids, 2,000 test grids):

- token-vlm over the caption vocabulary at the prototype's 50k samples, and over MiniLM's full
  WordPiece vocabulary (the paper's setting: an LLM's vocabulary) at 20k;
- vl-jepa with a frozen MiniLM target at the prototype's 100k samples, with per-slot questions
  mixed in (query-conditioned prediction, the default 25% of examples), and without them;
- vl-jepa with a trainable Y-encoder (learning-rate multiplier 0.05), on a small budget: on a
  CPU MiniLM's forward and backward dominate each step.

Then a probe of positional captions: the mean cosine between captions that only swap two
slots' items, in raw MiniLM and in each VL-JEPA's target space, and how often each model
prefers the true caption over its swapped twin (chance 50%).

Runs are kept under `--out` (default bench-out/models) and reused when their spec is unchanged,
so `--rows` can re-measure a subset; the table and `models.json` always cover what is there.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from vlarena.events import Event, LogEvent, ignore
from vlarena.files import read_json
from vlarena.jobs.spec import DatasetSpec, TrainJobSpec, parse_job_spec
from vlarena.rundirs import JobDir

# 2,000 test grids: a pool of 1,000 *distinct* test captions needs more than 1,000 grids.
FASHION = {"name": "fashion-grid", "options": {"n_train": 8000, "n_val": 500, "n_test": 2000}}
EMOJI = {"name": "emoji", "options": {}}
# Recall among 100 over 10 pools (1,000 queries, not 100). VL-JEPA evaluates on all 2,000 test
# grids (its text side is a lookup), the token VLM on the first 1,000 (one decoder pass per
# image–caption pair: R@1 among 1,000 would take it most of an hour).
EVAL_FASHION = {"retrievalPools": [100, 1000], "retrievalRepeats": 10, "maxImages": 2000}
EVAL_TOKEN = {"retrievalPools": [100], "retrievalRepeats": 10}
# The prototype's batch sizes (CALIBRATION.md): 64 for the token VLM, 128 for VL-JEPA, whose
# InfoNCE takes its negatives from the batch.
JEPA_BATCH = 128
EVAL_EMOJI = {"retrievalPools": [100]}

ROWS: dict[str, dict[str, Any]] = {
    "token-caption": {
        "label": "token-vlm, caption vocab",
        "family": "token-vlm",
        "dataset": FASHION,
        "config": {},
        "samples": 50_000,
        "evaluation": EVAL_TOKEN,
    },
    "token-full": {
        "label": "token-vlm, full WordPiece vocab",
        "family": "token-vlm",
        "dataset": FASHION,
        "config": {"vocabulary": "full"},
        # A 30,522-way softmax per token: on 2 CPU cores 50k samples would take most of an hour,
        # and scoring 10 retrieval pools (100k image–caption pairs) took 50 minutes: one pool.
        "samples": 20_000,
        "evaluation": {"retrievalPools": [100]},
    },
    "jepa-query": {
        "label": "vl-jepa, frozen Y, with queries",
        "family": "vl-jepa",
        "dataset": FASHION,
        "config": {},
        "samples": 100_000,
        "hyperparameters": {"batchSize": JEPA_BATCH},
        "evaluation": EVAL_FASHION,
    },
    "jepa-noquery": {
        "label": "vl-jepa, frozen Y, captions only",
        "family": "vl-jepa",
        "dataset": FASHION,
        "config": {},
        "samples": 100_000,
        "hyperparameters": {"batchSize": JEPA_BATCH, "vqaFraction": 0.0},
        "evaluation": EVAL_FASHION,
    },
    "jepa-trainable-y": {
        "label": "vl-jepa, trainable Y (x0.05)",
        "family": "vl-jepa",
        "dataset": FASHION,
        "config": {"y_lr_mult": 0.05},
        "samples": 10_000,
        "evaluation": EVAL_FASHION,
    },
    "emoji-token": {
        "label": "token-vlm, caption vocab",
        "family": "token-vlm",
        "dataset": EMOJI,
        "config": {},
        "samples": 30_000,
        "evaluation": EVAL_EMOJI,
    },
    "emoji-jepa": {
        "label": "vl-jepa, frozen Y",
        "family": "vl-jepa",
        "dataset": EMOJI,
        "config": {},
        "samples": 30_000,
        "hyperparameters": {"batchSize": JEPA_BATCH},
        "evaluation": EVAL_EMOJI,
    },
}
QUICK_SCALE = 0.1  # --quick: a tenth of every budget, for trying the benchmark itself

# (row, metric, floor): the prototype's figures on this kind of machine (CALIBRATION.md:
# caption of 10 92.2%, per slot 68.1%, R@1 among 100 72.3%, among 1,000 41.5%), on the row
# with its settings: VL-JEPA on captions only, frozen MiniLM target, batch 128, 100k samples.
FLOORS = [
    ("token-caption", "caption_of_10", 0.99),
    ("token-caption", "zeroshot_top1", 0.80),
    ("token-caption", "i2t_r1@100", 0.95),
    ("jepa-noquery", "caption_of_10", 0.92),
    ("jepa-noquery", "zeroshot_top1", 0.68),
    ("jepa-noquery", "i2t_r1@100", 0.72),
    ("jepa-noquery", "i2t_r1@1000", 0.415),
]
COLUMNS = [
    ("caption_of_10", "cap/10"),
    ("i2t_r1@100", "I→T R@1/100"),
    ("t2i_r1@100", "T→I R@1/100"),
    ("i2t_r1@1000", "I→T R@1/1k"),
    ("zeroshot_top1", "0-shot top1"),
    ("zeroshot_top5", "0-shot top5"),
    ("vqa_accuracy", "VQA"),
    ("cider", "CIDEr"),
    ("bleu4", "BLEU-4"),
]
POSITIONS = ("top left", "top right", "bottom left", "bottom right")


def row_spec(row: dict[str, Any], scale: float) -> dict[str, Any]:
    return {
        "type": "train",
        "model": {"family": row["family"], "config": {"preset": "small", **row["config"]}},
        "dataset": row["dataset"],
        "hyperparameters": {"batchSize": 64, "seed": 0, **row.get("hyperparameters", {})},
        "budget": {"samples": max(1024, int(row["samples"] * scale))},
        "evaluation": row["evaluation"],
        "export": False,
    }


def run_row(name: str, spec: dict[str, Any], out: Path, say) -> dict[str, Any]:
    """The run's result record, trained now unless `out/name` holds the same run (by its
    provenance hash: family, resolved configs, dataset fingerprint)."""
    from vlarena.experiments.inputs import open_dataset
    from vlarena.experiments.jobs import run_job, train_run_spec
    from vlarena.experiments.provenance import components, digest, recorded_hash

    job = JobDir(out / name)
    typed = parse_job_spec(spec)
    assert isinstance(typed, TrainJobSpec)
    run = train_run_spec(typed)
    result = job.single_run.result
    wanted = digest(components(run, open_dataset(run.dataset).fingerprint()))
    if result.exists() and recorded_hash(job.single_run) == wanted:
        say(f"{name}: reusing {result}")
        return dict(read_json(result))
    say(f"{name}: training {spec['model']['family']} for {spec['budget']['samples']:,} samples")
    started = time.perf_counter()

    def show(event: Event) -> None:
        if isinstance(event, LogEvent):
            say(f"  {event.message}")

    run_job(typed, job.path, on_event=show, force=True)
    say(f"{name}: done in {time.perf_counter() - started:.0f} s")
    return dict(read_json(result))


def swapped(caption: str) -> str | None:
    """The caption with the items of its first two differing slots exchanged, or None."""
    parts = caption.split(", ")
    slots = []
    for part in parts:
        match = re.fullmatch(rf"(.+) ({'|'.join(POSITIONS)})", part)
        if not match:
            return None
        slots.append([match.group(1), match.group(2)])
    for i in range(len(slots)):
        for j in range(i + 1, len(slots)):
            if slots[i][0] != slots[j][0]:
                slots[i][0], slots[j][0] = slots[j][0], slots[i][0]
                return ", ".join(f"{item} {pos}" for item, pos in slots)
    return None


def swap_probe(out: Path, names: list[str], limit: int = 500) -> dict[str, Any]:
    """Cosines of swap pairs per target space, and true-vs-swapped preference per model."""
    import torch
    import torch.nn.functional as F

    from vlarena.experiments.inputs import Splits, open_dataset, visual_inputs
    from vlarena.models.registry import load_model
    from vlarena.models.vl_jepa import VLJEPA
    from vlarena.models.y_encoder import MiniLM

    splits = Splits.for_training(open_dataset(DatasetSpec.model_validate(FASHION)))
    pairs = [
        (i, r.captions[0], s)
        for i, r in enumerate(splits.test.records[:limit])
        if (s := swapped(r.captions[0])) is not None
    ]
    index = torch.tensor([i for i, _, _ in pairs])
    true = [t for _, t, _ in pairs]
    swaps = [s for _, _, s in pairs]
    probe: dict[str, Any] = {"pairs": len(pairs), "cosine": {}, "preferTrue": {}}
    with torch.no_grad():
        minilm = MiniLM().eval()
        probe["cosine"]["MiniLM (raw)"] = float(
            F.cosine_similarity(minilm(true), minilm(swaps)).mean()
        )
        visual = None
        for name in names:
            model = load_model(JobDir(out / name).single_run.model).eval()
            if visual is None:
                visual = visual_inputs(model, splits.test, splits.full, ignore)[index]
            if isinstance(model, VLJEPA):
                a, b = model.encode_text(true), model.encode_text(swaps)
                probe["cosine"][name] = float(F.cosine_similarity(a, b).mean())
            scores = model.score_candidates(
                visual, [[t, s] for t, s in zip(true, swaps, strict=True)]
            )
            probe["preferTrue"][name] = float((scores[:, 0] > scores[:, 1]).float().mean())
    return probe


def _cell(metric: dict[str, Any] | None, raw: bool = False) -> str:
    """A metric beside its chance level: raw (CIDEr) or in percent."""
    if metric is None:
        return "-"
    value, chance = metric["value"], metric["chance"]
    mark = "" if metric.get("z") is None or metric["z"] >= 3 else "!"
    if raw:
        return f"{value:.2f} ({chance:.2f}){mark}"
    return f"{100 * value:.1f} ({100 * chance:.1f}){mark}"


def print_table(results: dict[str, dict[str, Any]], probe: dict[str, Any] | None) -> list[str]:
    """Prints the table; returns the floors that were missed."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=220)
    for dataset in ("fashion-grid", "emoji"):
        names = [n for n in ROWS if n in results and ROWS[n]["dataset"]["name"] == dataset]
        if not names:
            continue
        table = Table(
            title=f"{dataset}: metric % (chance %); CIDEr raw; ! = under 3 standard errors "
            "above chance",
            show_lines=False,
        )
        for header in ("run", "trainable", "batch", "samples", "samples/s"):
            table.add_column(header, justify="right" if header != "run" else "left")
        for _, header in COLUMNS:
            table.add_column(header, justify="right")
        for name in names:
            r = results[name]
            table.add_row(
                ROWS[name]["label"],
                f"{r['trainableParameters'] / 1e6:.2f}M",
                str(row_spec(ROWS[name], 1.0)["hyperparameters"]["batchSize"]),
                f"{r['samplesSeen']:,}",
                f"{r['samplesPerSecond']:.0f}",
                *(_cell(r["metrics"].get(m), raw=m == "cider") for m, _ in COLUMNS),
            )
        console.print(table)
    missed = []
    for name, metric, floor in FLOORS:
        if name not in results:
            continue
        value = results[name]["metrics"].get(metric, {}).get("value")
        ok = value is not None and value >= floor
        console.print(
            f"floor {ROWS[name]['label']:32s} {metric:14s} ≥ {100 * floor:4.1f}%: "
            f"{'-' if value is None else f'{100 * value:.1f}%'} {'met' if ok else 'MISSED'}"
        )
        if not ok:
            missed.append(f"{name} {metric}")
    if "token-full" in results and "jepa-query" in results:
        ratio = (
            results["jepa-query"]["trainableParameters"]
            / results["token-full"]["trainableParameters"]
        )
        console.print(f"trainable parameters, vl-jepa / full-vocab token-vlm: {ratio:.2f}×")
    if "token-caption" in results and "jepa-query" in results:
        ratio = (
            results["jepa-query"]["trainableParameters"]
            / results["token-caption"]["trainableParameters"]
        )
        console.print(f"trainable parameters, vl-jepa / caption-vocab token-vlm: {ratio:.2f}×")
    if probe:
        console.print(f"position-swap probe ({probe['pairs']} test captions and their swaps):")
        for space, cosine in probe["cosine"].items():
            console.print(f"  cosine(true, swapped) in {space}: {cosine:.4f}")
        for name, share in probe["preferTrue"].items():
            console.print(f"  {ROWS[name]['label']}: prefers the true caption {100 * share:.1f}%")
    return missed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vlarena.bench.models", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("bench-out/models"))
    parser.add_argument("--rows", help=f"comma-separated subset of: {', '.join(ROWS)}")
    parser.add_argument("--quick", action="store_true", help="a tenth of every budget")
    parser.add_argument("--no-probe", action="store_true", help="skip the position-swap probe")
    args = parser.parse_args(argv)
    names = args.rows.split(",") if args.rows else list(ROWS)
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        parser.error(f"unknown rows {unknown}; choose from {', '.join(ROWS)}")
    scale = QUICK_SCALE if args.quick else 1.0

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    for name in names:
        run_row(name, row_spec(ROWS[name], scale), args.out, say)
    results = {
        name: read_json(JobDir(args.out / name).single_run.result)
        for name in ROWS
        if JobDir(args.out / name).single_run.result.exists()
    }
    fashion = [n for n in results if ROWS[n]["dataset"] is FASHION]
    probe = None if args.no_probe or not fashion else swap_probe(args.out, fashion)
    missed = print_table(results, probe)
    document: dict[str, Any] = {
        "schema": "vlarena.bench.models/v1",
        "rows": results,
        "probe": probe,
    }
    for r in document["rows"].values():
        r.pop("samples", None)
    (args.out / "models.json").write_text(json.dumps(document, indent=1) + "\n")
    print(f"results: {args.out / 'models.json'}")
    return 1 if missed and not args.quick else 0


if __name__ == "__main__":
    sys.exit(main())
