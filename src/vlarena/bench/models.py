"""`make bench-models`: the two families compared as the platform compares them, with
intervals, verdicts and crossovers, on `fashion-grid` and `emoji`.

Each comparison is one compare job through the same `run_job` the platform uses (cached
frozen EfficientNet-Lite0 features, the `small` preset: d=256, 2 layers), so its runs, paired
statistics, verdicts and budget sweep are the ones a user gets. In order:

- `fashion-pretrained`, `emoji-pretrained`: the matched pretrained-prior pair (token VLM
  with MiniLM word-piece embeddings over the full vocabulary, VL-JEPA with MiniLM targets),
  3 seeds, budgets 5k and 20k samples; both families scored on the same first 1,000 test items
  (R@1 among 100 over 10 pools, hard-negative caption choice beside random distractors);
- `fashion-scratch`: the other two cells of the 2×2 (both text sides from scratch), 1 seed;
- `fashion-80k`: the matched pretrained pair at 80k samples, 1 seed (cut first when the whole
  set does not fit the time there is).

Then `floor`: VL-JEPA alone trained as the prototype of CALIBRATION.md was (fashion-grid 2×2,
8,000 training grids, captions only, batch 128, 100k samples) and evaluated on all 2,000 test
grids (R@1 among 100 and among 1,000, 10 pools each) against the prototype's figures, with
selective decoding's stream benchmark on that model (64 streams of fashion-grid test grids):
its headline ratio beside the paper's 2.85×, and whether it beats the same clustering of raw
X-encoder features, the floor it has to clear. Last, a probe of positional captions: the mean
cosine between captions that only swap two slots' items, in raw MiniLM and in each VL-JEPA's
target space, and how often each model prefers the true caption (chance 50%).

Runs are kept under `--out` (default bench-out/models) and reused when their spec is unchanged
(their provenance hash), so `--only` can re-measure a subset; the tables and `models.json`
cover every comparison there is.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Any

from vlarena.events import Event, LogEvent, ignore
from vlarena.files import read_json, write_json
from vlarena.jobs.spec import CompareJobSpec, DatasetSpec, parse_job_spec
from vlarena.rundirs import JobDir

# 2,000 test grids: a pool of 1,000 *distinct* test captions needs more than 1,000 grids.
FASHION = {"name": "fashion-grid", "options": {"n_train": 8000, "n_val": 500, "n_test": 2000}}
EMOJI = {"name": "emoji", "options": {}}
# Both families on the same first 1,000 test items, so every difference is paired; R@1 among
# 100 over 10 pools (1,000 queries). The token VLM runs a decoder pass per image–caption pair,
# which is what keeps pools of 1,000 to the VL-JEPA floor evaluation.
EVAL_PAIRED = {"maxImages": 1000, "retrievalPools": [100], "retrievalRepeats": 10}
# emoji's test split has 184 images: two pools of 100 query each about once.
EVAL_EMOJI = {"maxImages": 1000, "retrievalPools": [100], "retrievalRepeats": 2}
PRETRAINED = {"token-vlm": {"text_prior": "pretrained"}, "vl-jepa": {"text_prior": "pretrained"}}
SCRATCH = {"token-vlm": {"text_prior": "scratch"}, "vl-jepa": {"text_prior": "scratch"}}

COMPARISONS: dict[str, dict[str, Any]] = {
    "fashion-pretrained": {
        "label": "fashion-grid, both priors pretrained",
        "dataset": FASHION,
        "families": PRETRAINED,
        "seeds": 3,
        "budgets": [5_000, 20_000],
    },
    "emoji-pretrained": {
        "label": "emoji, both priors pretrained",
        "dataset": EMOJI,
        "evaluation": EVAL_EMOJI,
        "families": PRETRAINED,
        "seeds": 3,
        "budgets": [5_000, 20_000],
    },
    "fashion-scratch": {
        "label": "fashion-grid, both priors from scratch",
        "dataset": FASHION,
        "families": SCRATCH,
        "seeds": 1,
        "budgets": [5_000, 20_000],
    },
    "fashion-80k": {
        "label": "fashion-grid, both priors pretrained, 80k samples",
        "dataset": FASHION,
        "families": PRETRAINED,
        "seeds": 1,
        "budgets": [80_000],
    },
}
QUICK_SCALE = 0.1  # --quick: a tenth of every budget and of the test items
QUICK_MIN_SAMPLES = 1024

# The floor run: VL-JEPA alone, trained as the prototype whose figures the floors are
# (CALIBRATION.md: captions only, batch 128, 100k samples; R@1 among 100 72.3%, among 1,000
# 41.5%), on every test grid with pools of 100 and 1,000. The comparisons train both families
# at batch 64 with a quarter of VQA samples, which at 80k reaches the among-100 floor but not
# the among-1,000 one: fewer negatives per batch, fewer caption samples.
FLOOR_NAME, FLOOR_FAMILY = "floor", "vl-jepa"
FLOOR_EVAL = {"maxImages": 2000, "retrievalPools": [100, 1000], "retrievalRepeats": 10}
FLOOR: dict[str, Any] = {
    "dataset": FASHION,
    "families": {"vl-jepa": {"text_prior": "pretrained"}},
    "seeds": 1,
    "budgets": [100_000],
    "hyperparameters": {"batchSize": 128, "vqaFraction": 0.0},
    "evaluation": FLOOR_EVAL,
}
FLOORS = [("i2t_r1@100", 0.72), ("i2t_r1@1000", 0.415)]
SELECTIVE_FLOOR = "selective > raw feature"
SELECTIVE_STREAMS = 64  # the stream benchmark's own size; --quick: 8
POSITIONS = ("top left", "top right", "bottom left", "bottom right")


def compare_spec(cmp: dict[str, Any], quick: bool = False) -> dict[str, Any]:
    """The compare job of one comparison (--quick: budgets and test items cut to a tenth)."""
    scale = QUICK_SCALE if quick else 1.0
    budgets = [max(QUICK_MIN_SAMPLES, int(b * scale)) if quick else b for b in cmp["budgets"]]
    evaluation: dict[str, Any] = dict(cmp.get("evaluation", EVAL_PAIRED))
    if quick:
        evaluation |= {
            "maxImages": int(1000 * scale),
            "retrievalPools": [100],
            "retrievalRepeats": 1,
        }
    spec: dict[str, Any] = {
        "type": "compare",
        "dataset": cmp["dataset"],
        "families": list(cmp["families"]),
        "seeds": cmp["seeds"],
        "model": {"config": {"preset": "small"}, "families": cmp["families"]},
        "hyperparameters": {"batchSize": 64} | cmp.get("hyperparameters", {}),
        "evaluation": evaluation,
        # The verdict and the crossover are computed here from metrics.json; the report's
        # probes (latency, pictures, selective decoding) are not what this benchmark measures.
        "report": False,
        "export": False,
    }
    if len(budgets) == 1:
        spec["budget"] = {"samples": budgets[0]}
    else:
        spec["budgets"] = [{"samples": b} for b in budgets]
    return spec


def run_comparison(name: str, spec: dict[str, Any], out: Path, say) -> dict[str, Any]:
    """The comparison's metrics.json and the wall-clock it took; runs already made by the same
    spec (their provenance hash) are reused, not retrained."""
    from vlarena.experiments.jobs import run_job

    job = JobDir(out / name)
    typed = parse_job_spec(spec)
    assert isinstance(typed, CompareJobSpec)
    say(
        f"{name}: {len(typed.all_budgets)} budget(s) × {len(spec['families'])} families × "
        f"{spec['seeds']} seed(s)"
    )
    started = time.perf_counter()

    def show(event: Event) -> None:
        if isinstance(event, LogEvent):
            say(f"  {event.message}")

    run_job(typed, job.path, on_event=show)
    seconds = time.perf_counter() - started
    say(f"{name}: done in {seconds:.0f} s")
    largest = typed.all_budgets[-1]
    # Each smaller budget of a sweep keeps its own metrics.json; the largest is the job's.
    per_budget = [
        read_json(job.metrics if b == largest else job.at_budget(b.unit, b.amount).metrics)
        for b in typed.all_budgets
    ]
    return {"metrics": read_json(job.metrics), "budgets": per_budget, "seconds": seconds}


def floor_run(out: Path, quick: bool, say) -> dict[str, Any]:
    """The floor run's metrics (trained, or reused when its spec is unchanged)."""
    result = run_comparison(FLOOR_NAME, compare_spec(FLOOR, quick), out, say)
    return dict(result["metrics"]["families"][FLOOR_FAMILY]["seeds"][0]["metrics"])


def floor_selective(out: Path, quick: bool, say) -> dict[str, Any]:
    """Selective decoding's stream benchmark on the floor's VL-JEPA, kept in
    `<out>/floor/selective.json` and reused while the floor run's provenance is unchanged."""
    from vlarena.evaluation.report.selective import SelectiveConfig, selective_decoding
    from vlarena.experiments.features import frame_encoder
    from vlarena.experiments.inputs import open_dataset
    from vlarena.experiments.runtime import configured_threads
    from vlarena.models.registry import load_model

    job = JobDir(out / FLOOR_NAME)
    provenance = read_json(job.metrics)["families"][FLOOR_FAMILY]["seeds"][0].get("provenance")
    streams = 8 if quick else SELECTIVE_STREAMS
    kept = job.path / "selective.json"
    if kept.exists():
        previous = read_json(kept)
        if previous.get("provenance") == provenance and previous.get("streams") == streams:
            return dict(previous["result"])
    model = load_model(job.seed_run(FLOOR_FAMILY, 0).model)
    encode = (
        frame_encoder(model.x_encoder, configured_threads()) if model.x_encoder.frozen else None
    )
    test = open_dataset(DatasetSpec.model_validate(FASHION)).split("test")
    say(f"{FLOOR_NAME}: selective decoding, {streams} streams")
    started = time.perf_counter()
    result = selective_decoding(model, test, SelectiveConfig(streams=streams), encode)
    result["seconds"] = time.perf_counter() - started
    write_json(kept, {"provenance": provenance, "streams": streams, "result": result})
    return result


def selective_lines(result: dict[str, Any] | None, console: Any) -> list[str]:
    """Prints selective decoding's headline beside the paper's and its floor (beating the
    raw-feature segmentation); returns the floor when missed."""
    from vlarena.evaluation.report.selective import beats

    if result is None:
        console.print(f"floor {SELECTIVE_FLOOR}: not measured MISSED")
        return [SELECTIVE_FLOOR]
    head = result["headline"]

    def ratio(curve: str) -> str:
        value = head[curve]["ratio"]
        return "not reached" if value is None else f"{value:.2f}×"

    console.print(
        f"selective decoding ({result['streams']} streams × {result['framesPerStream']} frames, "
        f"{result['trueSegmentsPerStream']:.1f} true segments each): fewer decodes than uniform "
        f"at equal CIDEr, geometric mean over 1/2 to 1/16: selective {ratio('selective')} "
        f"(paper {head['paper']:.2f}×), raw-feature segmentation {ratio('rawFeature')}"
    )
    every = result.get("ratioVsEveryFrame")
    console.print(
        f"  at the CIDEr of decoding every frame ({result['everyFrameCider']:.3f}; chance "
        f"{result['chanceCider']:.3f}): "
        + ("not reached" if every is None else f"{every:.2f}× fewer decodes than every frame")
    )
    rates = zip(head["selective"]["rates"], head["rawFeature"]["rates"], strict=True)
    for sel, raw in rates:
        console.print(
            f"  1/{sel['every']:<3} uniform CIDEr {sel['cider']:.3f} in {sel['uniformDecodes']:.0f} "
            f"decodes: selective {_decodes(sel['decodes'])}, raw feature {_decodes(raw['decodes'])}"
        )
    met = beats(head["selective"]["ratio"], head["rawFeature"]["ratio"]) is True
    console.print(f"floor {SELECTIVE_FLOOR}: {'met' if met else 'MISSED'}")
    return [] if met else [SELECTIVE_FLOOR]


def _decodes(value: float | None) -> str:
    return "never reaches it" if value is None else f"{value:.1f}"


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


def swap_probe(out: Path, limit: int = 500) -> dict[str, Any]:
    """Cosines of swap pairs per target space, and true-vs-swapped preference per model (the
    first seed of each fashion-grid comparison's families at its largest budget)."""
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
        for name, cmp in {**COMPARISONS, FLOOR_NAME: FLOOR}.items():
            if cmp["dataset"] is not FASHION:
                continue
            for family in cmp["families"]:
                run = JobDir(out / name).seed_run(family, 0)
                if not run.model.exists():
                    continue
                model = load_model(run.model).eval()
                if visual is None:
                    visual = visual_inputs(model, splits.test, splits.full, ignore)[index]
                key = f"{name} {family}"
                if isinstance(model, VLJEPA):
                    a, b = model.encode_text(true), model.encode_text(swaps)
                    probe["cosine"][key] = float(F.cosine_similarity(a, b).mean())
                scores = model.score_candidates(
                    visual, [[t, s] for t, s in zip(true, swaps, strict=True)]
                )
                probe["preferTrue"][key] = float((scores[:, 0] > scores[:, 1]).float().mean())
    return probe


def _pct(value: float | None, raw: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if raw else f"{100 * value:.1f}"


def _stat_cell(stat: dict[str, Any] | None, raw: bool) -> str:
    """A mean with its 95% interval over items and seeds (or ± std without one)."""
    if not stat:
        return "-"
    interval = stat.get("interval95")
    if interval:
        return f"{_pct(stat['mean'], raw)} [{_pct(interval[0], raw)}, {_pct(interval[1], raw)}]"
    return _pct(stat["mean"], raw)


def _difference_cell(paired: dict[str, Any] | None, raw: bool) -> str:
    if not paired:
        return "-"
    low, high = paired["interval95"]
    return f"{_pct(paired['difference'], raw)} [{_pct(low, raw)}, {_pct(high, raw)}]"


RAW_METRICS = ("cider", "bleu4", "decoder_ceiling_cider", "decoder_ceiling_bleu4")


def comparison_lines(name: str, result: dict[str, Any], console: Any) -> dict[str, Any]:
    """Prints one comparison: per budget, every quality metric per family with its interval,
    the paired difference, chance; the costs per stage; the verdicts and the crossovers.
    Returns what it printed as data."""
    from rich.table import Table

    from vlarena.evaluation.report.comparison import build_report, metric_label
    from vlarena.evaluation.report.sweep import budget_label, sweep_lines

    doc = result["metrics"]
    printed: dict[str, Any] = {"seconds": result["seconds"], "budgets": {}}
    for entry in result["budgets"]:
        label = budget_label(entry["budget"])
        families = list(entry["families"])
        report = build_report(entry)
        table = Table(
            title=f"{COMPARISONS[name]['label']} at {label}: % (raw for caption scores), "
            f"mean [95% interval]; difference = {families[0]} − {families[1]}"
        )
        table.add_column("metric")
        for f in families:
            table.add_column(f, justify="right")
        table.add_column("difference", justify="right")
        table.add_column("chance", justify="right")
        for row in report["table"]:
            if row.get("group") != "quality" or row["key"] == "validationCosine":
                continue
            raw = row["key"] in RAW_METRICS
            table.add_row(
                metric_label(row["key"]),
                *(_stat_cell(row["values"].get(f), raw) for f in families),
                _difference_cell((entry.get("paired") or {}).get(row["key"]), raw),
                _pct(row.get("chance"), raw),
            )
        console.print(table)
        costs = Table(title=f"{COMPARISONS[name]['label']} at {label}: cost per stage (seed 0)")
        for header in ("family", "stage", "learned params", "samples", "FLOPs", "seconds"):
            costs.add_column(header, justify="left" if header in ("family", "stage") else "right")
        for f in families:
            seed = entry["families"][f]["seeds"][0]
            for stage, body in (seed.get("stages") or {}).items():
                flops = body.get("flops")
                costs.add_row(
                    f,
                    stage,
                    f"{body.get('learnedParameters', 0) / 1e6:.2f}M",
                    f"{body.get('samples', body.get('texts', 0)):,}",
                    "-" if flops is None else f"{flops:.3g}",
                    f"{body.get('seconds', 0):.0f}",
                )
            cosine = (seed.get("stages") or {}).get("ydecoder", {}).get("validationCosine")
            if cosine is not None:
                console.print(f"{f}: cosine(prediction, target) on validation {cosine:.3f}")
        if costs.row_count:
            console.print(costs)
        verdict_lines = [u["sentence"] for u in report["verdict"]["useCases"]]
        for line in verdict_lines:
            console.print(f"verdict: {line}")
        printed["budgets"][label] = {"table": report["table"], "verdict": verdict_lines}
    if doc.get("sweep"):
        from vlarena.evaluation.report.comparison import sweep_of

        lines = sweep_lines(sweep_of(doc))
        console.print("\n".join(lines))
        printed["crossover"] = lines
    console.print(f"{name}: wall-clock {result['seconds'] / 60:.1f} min")
    return printed


def floor_lines(metrics: dict[str, Any] | None, console: Any) -> list[str]:
    """Prints the floors; returns those missed (a floor without a value is missed)."""
    missed = []
    for metric, floor in FLOORS:
        value = (metrics or {}).get(metric, {}).get("value")
        ok = value is not None and value >= floor
        console.print(
            f"floor {FLOOR_FAMILY} {metric:12s} ≥ {100 * floor:4.1f}%: "
            f"{'-' if value is None else f'{100 * value:.1f}%'} {'met' if ok else 'MISSED'}"
        )
        if not ok:
            missed.append(metric)
    return missed


def probe_lines(probe: dict[str, Any], console: Any) -> None:
    console.print(f"position-swap probe ({probe['pairs']} test captions and their swaps):")
    for space, cosine in probe["cosine"].items():
        console.print(f"  cosine(true, swapped) in {space}: {cosine:.4f}")
    for name, share in probe["preferTrue"].items():
        console.print(f"  {name}: prefers the true caption {100 * share:.1f}%")


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    parser = argparse.ArgumentParser(prog="python -m vlarena.bench.models", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("bench-out/models"))
    known = [*COMPARISONS, FLOOR_NAME]
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(known)}")
    parser.add_argument("--quick", action="store_true", help="a tenth of budgets and items")
    parser.add_argument("--no-probe", action="store_true", help="skip the position-swap probe")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else known
    unknown = [n for n in names if n not in known]
    if unknown:
        parser.error(f"unknown comparisons {unknown}; choose from {', '.join(known)}")

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in (n for n in names if n in COMPARISONS):
        results[name] = run_comparison(
            name, compare_spec(COMPARISONS[name], args.quick), args.out, say
        )
    console = Console(width=200)
    document: dict[str, Any] = {"schema": "vlarena.bench.models/v2", "comparisons": {}}
    for name, result in results.items():
        document["comparisons"][name] = comparison_lines(name, result, console)
    missed: list[str] = []
    if FLOOR_NAME in names:
        floors = floor_run(args.out, args.quick, say)
        missed = floor_lines(floors, console)
        selective = floor_selective(args.out, args.quick, say)
        missed += selective_lines(selective, console)
        document["floors"] = {"metrics": floors, "selective": selective, "missed": missed}
    if not args.no_probe:
        document["probe"] = swap_probe(args.out)
        probe_lines(document["probe"], console)
    document["seconds"] = time.perf_counter() - started
    console.print(f"bench-models: {document['seconds'] / 60:.1f} min wall-clock")
    write_json(args.out / "models.json", document)
    print(f"results: {args.out / 'models.json'}")
    return 1 if missed and not args.quick else 0


if __name__ == "__main__":
    sys.exit(main())
