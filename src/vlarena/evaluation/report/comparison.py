"""The numbers of a comparison report, from a compare job's metrics.json: learning curves over
seeds with their spread, the side-by-side table with chance levels, the verdict and the cost."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from vlarena.errors import UserInputError
from vlarena.evaluation.report.cost import DEFAULT_NODES, NodeType, cost_section
from vlarena.evaluation.report.sweep import budget_sweep
from vlarena.evaluation.report.verdict import primary_metrics, verdict

REPORT_SCHEMA = "vlarena.report/v1"
METRICS_SCHEMA = "vlarena.metrics/v4"
# Documents this report still reads: v1 lacks learned parameters (its trainable ones stand in).
READABLE_SCHEMAS = (
    "vlarena.metrics/v1",
    "vlarena.metrics/v2",
    "vlarena.metrics/v3",
    METRICS_SCHEMA,
)
CURVE_KEYS = ("samplesSeen", "step")

# Readable names of the metrics evaluate.py writes (a retrieval pool size follows "@").
METRIC_LABELS = {
    "caption_of_": "true caption among {n}",
    "hard_caption_of_": "true caption among {n}, distractors of the same items or class",
    "i2t_r1@": "image→text R@1 among {n}",
    "i2t_r5@": "image→text R@5 among {n}",
    "i2t_r10@": "image→text R@10 among {n}",
    "t2i_r1@": "text→image R@1 among {n}",
    "t2i_r5@": "text→image R@5 among {n}",
    "t2i_r10@": "text→image R@10 among {n}",
    "zeroshot_top1": "zero-shot top-1",
    "zeroshot_top5": "zero-shot top-5",
    "zeroshot_balanced": "zero-shot balanced accuracy (mean per-class recall)",
    "zeroshot_heldout_top1": "zero-shot top-1, prompts held out from the captions",
    "zeroshot_heldout_top5": "zero-shot top-5, prompts held out from the captions",
    "zeroshot_heldout_balanced": "zero-shot balanced accuracy, prompts held out from the captions",
    "vqa_accuracy": "multiple-choice VQA",
    "cider": "CIDEr-D",
    "bleu4": "BLEU-4",
    "decoder_ceiling_cider": "Y-decoder ceiling CIDEr-D",
    "decoder_ceiling_bleu4": "Y-decoder ceiling BLEU-4",
    "loss": "training loss",
}


def metric_label(name: str) -> str:
    """ "i2t_r1@100" → "image→text R@1 among 100"; unknown names stay as they are."""
    if name in METRIC_LABELS:
        return METRIC_LABELS[name]
    for prefix, label in METRIC_LABELS.items():
        if prefix.endswith(("_", "@")) and name.startswith(prefix):
            return label.format(n=name[len(prefix) :])
    return name


def metric_order(name: str) -> tuple[int, str]:
    """Table order: matching, retrieval, classification, VQA, then caption scores."""
    for rank, prefix in enumerate(METRIC_LABELS):
        if name == prefix or (prefix.endswith(("_", "@")) and name.startswith(prefix)):
            return rank, name
    return len(METRIC_LABELS), name


CAPTION_SCORES = ("cider", "bleu4")


def quality_groups(table: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """The quality rows in two groups with their own scales: accuracies and recalls (0–1),
    and caption scores (CIDEr-D reaches 10)."""
    rows = [r for r in table if r.get("group") == "quality"]
    scores = [r for r in rows if r["key"].endswith(CAPTION_SCORES)]
    choices = [r for r in rows if r not in scores]
    return [
        (title, group)
        for title, group in (("accuracy and recall", choices), ("caption scores", scores))
        if group
    ]


def learned_parameters(family: Mapping[str, Any]) -> int:
    """Parameters a family learned at any stage; a v1 document has only its main loop's."""
    return int(family.get("learnedParameters", family["trainableParameters"]))


def check_metrics(doc: Mapping[str, Any]) -> None:
    if doc.get("schema") not in READABLE_SCHEMAS:
        raise UserInputError(
            f"not a vlarena metrics document: schema {doc.get('schema')!r}; this version reads "
            f"{', '.join(READABLE_SCHEMAS)}"
        )
    if not doc.get("families"):
        raise UserInputError("metrics.json has no families")


def _spread(rows: list[list[float]]) -> tuple[list[float], list[float]]:
    arr = np.asarray(rows, dtype=np.float64)
    std = arr.std(0, ddof=1) if len(arr) > 1 else np.zeros(arr.shape[1])
    return arr.mean(0).tolist(), std.tolist()


def learning_curves(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Per curve metric and family: samples seen, mean and std over seeds, each seed's values.

    Seeds of one family share their evaluation points (same budget and batch size); a seed
    evaluated elsewhere is interpolated onto the first seed's points.
    """
    summaries = [body.get("summary", {}) for body in doc["families"].values()]
    out: dict[str, Any] = {}
    for family, body in doc["families"].items():
        runs = [s["curve"] for s in body["seeds"] if s.get("curve")]
        if not runs:
            continue
        grid = [p["samplesSeen"] for p in runs[0]]
        names = sorted({k for run in runs for p in run for k in p} - set(CURVE_KEYS))
        for name in names:
            per_seed = []
            for run in runs:
                xs = [p["samplesSeen"] for p in run if p.get(name) is not None]
                ys = [p[name] for p in run if p.get(name) is not None]
                if xs:
                    per_seed.append(np.interp(grid, xs, ys).tolist())
            if not per_seed:
                continue
            mean, std = _spread(per_seed)
            chance = next((s[name]["chance"] for s in summaries if name in s), None)
            entry = out.setdefault(
                name, {"label": metric_label(name), "chance": chance, "families": {}}
            )
            entry["families"][family] = {
                "samplesSeen": grid,
                "mean": mean,
                "std": std,
                "seeds": per_seed,
            }
    return out


def _stat(values: list[float]) -> dict[str, Any]:
    return {
        "mean": float(np.mean(values)),
        "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
        "seeds": len(values),
        "perSeed": values,
    }


def comparison_table(
    doc: Mapping[str, Any], probes: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Rows of the side-by-side table: size, speed, decoding cost, then every quality metric
    with its chance level. Each value: mean, std over seeds and the per-seed values."""
    families = doc["families"]
    probes = probes or {}
    rows: list[dict[str, Any]] = []

    def add(key: str, label: str, unit: str, better: str | None, values: dict, **extra: Any):
        if any(v is not None for v in values.values()):
            rows.append(
                {"key": key, "label": label, "unit": unit, "better": better, "values": values}
                | extra
            )

    def per_seed(field: str) -> dict[str, Any]:
        out = {}
        for fam, body in families.items():
            vals = [s[field] for s in body["seeds"] if s.get(field) is not None]
            out[fam] = _stat(vals) if vals else None
        return out

    add(
        "learnedParameters",
        "parameters learned at any stage (VL-JEPA's Y-decoder included)",
        "",
        None,
        {f: _stat([learned_parameters(b)]) for f, b in families.items()},
        group="size and speed",
    )
    add(
        "totalParameters",
        "total parameters (with frozen encoders)",
        "",
        None,
        {f: _stat([b["totalParameters"]]) for f, b in families.items()},
        group="size and speed",
    )
    add(
        "samplesPerSecond",
        "training throughput",
        "samples/s",
        "higher",
        per_seed("samplesPerSecond"),
        group="size and speed",
    )
    add(
        "trainSeconds",
        "training time",
        "s",
        "lower",
        per_seed("trainSeconds"),
        group="size and speed",
    )
    add(
        "trainFlops",
        "training FLOPs, every stage (target encoding, main loop, Y-decoder)",
        "FLOPs",
        "lower",
        per_seed("trainFlops"),
        group="size and speed",
    )
    for item, label in (
        ("choose10", "inference FLOPs per caption choice among 10 (after image features)"),
        ("caption", "inference FLOPs per written caption (after image features)"),
    ):
        add(
            f"inferenceFlops.{item}",
            label,
            "FLOPs",
            "lower",
            {
                f: _stat([float(b["seeds"][0]["inferenceFlops"][item])])
                if item in (b["seeds"][0].get("inferenceFlops") or {})
                else None
                for f, b in families.items()
            },
            group="size and speed",
        )
    add(
        "latencyMsPerImage",
        "caption latency (training job, batch 1)",
        "ms",
        "lower",
        per_seed("latencyMsPerImage"),
        group="size and speed",
    )
    latency = probes.get("latency") or {}
    for key, label in (
        ("caption", "caption latency (report, batch 1)"),
        ("classify", "zero-shot choice latency (report, batch 1)"),
        ("embed", "embedding latency (report, batch 1)"),
    ):
        values = {
            f: _stat([latency[f][key]]) if key in latency.get(f, {}) else None for f in families
        }
        add(f"{key}Ms", label, "ms", "lower", values, group="decoding cost")
    steps = probes.get("decodeSteps") or {}
    add(
        "decodeSteps",
        "autoregressive steps per caption",
        "steps",
        "lower",
        {f: _stat([steps[f]]) if steps.get(f) is not None else None for f in families},
        group="decoding cost",
    )
    passes = {}
    for f in families:
        if f in latency and "classifyCandidates" in latency[f]:
            # an embedding predictor compares one prediction with cached text embeddings; a
            # token model runs its decoder over every candidate
            c = latency[f]["classifyCandidates"]
            passes[f] = _stat([0.0 if "embed" in latency[f] else float(c)])
    add(
        "classifyDecoderPasses",
        "decoder passes per zero-shot choice",
        "passes",
        "lower",
        passes,
        group="decoding cost",
    )
    selective = probes.get("selectiveDecoding")
    if selective and selective.get("ratioVsEveryFrame"):
        values = {
            f: _stat([1.0 / selective["ratioVsEveryFrame"]]) if f == selective["family"] else None
            for f in families
        }
        add(
            "decodesPerFrame",
            "text decodes per stream frame (selective, at every-frame CIDEr)",
            "per frame",
            "lower",
            values,
            group="decoding cost",
        )
    cosine = {}
    for f, b in families.items():
        vals = [
            s["stages"]["ydecoder"]["validationCosine"]
            for s in b["seeds"]
            if "validationCosine" in (s.get("stages") or {}).get("ydecoder", {})
        ]
        cosine[f] = _stat(vals) if vals else None
    add(
        "validationCosine",
        "cosine of predicted and target embeddings on validation (what the Y-decoder reads)",
        "",
        "higher",
        cosine,
        group="quality",
    )
    names = sorted(
        {m for body in families.values() for m in body.get("summary", {})}, key=metric_order
    )
    for name in names:
        values, chance, n = {}, None, None
        for fam, body in families.items():
            seeds = [s["metrics"][name]["value"] for s in body["seeds"] if name in s["metrics"]]
            if not seeds:
                values[fam] = None
                continue
            zs = [s["metrics"][name].get("z") for s in body["seeds"] if name in s["metrics"]]
            values[fam] = _stat(seeds) | {
                "zMin": min(zs) if zs and None not in zs else None,
                # over items and seeds (metrics.json v3): what the mean could have been
                "interval95": body["summary"][name].get("interval95"),
            }
            chance = body["summary"][name]["chance"]
            n = body["summary"][name]["n"]
        add(name, metric_label(name), "", "higher", values, chance=chance, n=n, group="quality")
    return rows


def checkpoint_selection(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per family, its last and best-on-validation checkpoints side by side: the samples seen
    at each (per seed), the selection metric on validation and each use case's primary metric
    on test (means over seeds). Reported only; the table and the verdict read the last.
    Families whose runs kept no best state (no validation curve, older runs) are left out."""
    out = []
    for family, body in doc["families"].items():
        runs = [s["checkpoints"] for s in body["seeds"] if "best" in (s.get("checkpoints") or {})]
        if not runs:
            continue
        measured = set.intersection(*(set(c[k]["metrics"]) for c in runs for k in ("last", "best")))
        rows: dict[str, dict[str, Any]] = {}
        for key in ("last", "best"):
            picked = [c[key] for c in runs]
            validation = [c["value"] for c in picked if c.get("value") is not None]
            rows[key] = {
                "samples": [c["samples"] for c in picked],
                "validation": float(np.mean(validation)) if validation else None,
                "test": {
                    name: float(np.mean([c["metrics"][name]["value"] for c in picked]))
                    for name in primary_metrics(measured).values()
                },
            }
        metric = runs[0]["best"]["metric"]
        labels = {name: metric_label(name) for name in [metric, *rows["last"]["test"]]}
        out.append({"family": family, "metric": metric, "labels": labels} | rows)
    return out


def _summaries(doc: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Each family's summary, marked binomial or not (caption scores have no binomial error)."""
    out = {}
    for fam, body in doc["families"].items():
        first = body["seeds"][0]["metrics"] if body["seeds"] else {}
        out[fam] = {
            name: {**stat, "binomial": (first.get(name) or {}).get("stderr") is not None}
            for name, stat in body.get("summary", {}).items()
        }
    return out


def _early(curves: Mapping[str, Any]) -> tuple[dict[str, dict[str, Any]], int | None]:
    """Each family's curve metrics at the first evaluation point, shaped like a summary."""
    early: dict[str, dict[str, Any]] = {}
    at = None
    for name, entry in curves.items():
        if name == "loss":
            continue
        for fam, c in entry["families"].items():
            at = c["samplesSeen"][0] if at is None else min(at, c["samplesSeen"][0])
            early.setdefault(fam, {})[name] = {
                "mean": c["mean"][0],
                "std": c["std"][0],
                "seeds": len(c["seeds"]),
                "chance": entry["chance"],
                "n": 0,
            }
    return early, at


# What each cell of the family × prior design starts its text side from.
PRIOR_CELLS: dict[tuple[str, str], str] = {
    ("token-vlm", "pretrained"): "token embeddings from MiniLM's word-piece table (PCA to the "
    "model width), full vocabulary, input and output tied, trained",
    ("token-vlm", "scratch"): "random token embeddings over the training texts' word-pieces",
    ("vl-jepa", "pretrained"): "targets from pretrained MiniLM (frozen, or learning at "
    "y_lr_mult × the rate)",
    ("vl-jepa", "scratch"): "targets from a text encoder of the predictor's size, randomly "
    "initialised and trained jointly",
}
DEFAULT_PRIORS = {"token-vlm": "scratch", "vl-jepa": "pretrained"}


def prior_cells(configs: Mapping[str, Mapping[str, Any] | None]) -> list[dict[str, Any]]:
    """The 2×2 of family × text prior: each cell, what it starts from and whether it ran
    (configs saved before priors existed ran their family's default)."""
    ran = {
        (fam, (cfg or {}).get("text_prior", DEFAULT_PRIORS.get(fam, "")))
        for fam, cfg in configs.items()
    }
    return [
        {"family": fam, "prior": prior, "startsFrom": text, "ran": (fam, prior) in ran}
        for (fam, prior), text in PRIOR_CELLS.items()
    ]


def sweep_of(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The budget sweep of a metrics document that trained several budgets (metrics.json v4)."""
    return budget_sweep(doc["sweep"], [_summaries(entry) for entry in doc["sweep"]])


def build_report(
    doc: Mapping[str, Any],
    *,
    probes: Mapping[str, Any] | None = None,
    measured: Mapping[str, Any] | None = None,
    nodes: Iterable[NodeType] = DEFAULT_NODES,
) -> dict[str, Any]:
    """The report document (report.json) of a compare job's metrics.json, with what the
    report measured on the models (`probes`) where it could load them."""
    check_metrics(doc)
    probes = dict(probes or {})
    families = doc["families"]
    curves = learning_curves(doc)
    table = comparison_table(doc, probes)
    early, early_at = _early(curves)
    latency = probes.get("latency") or {}
    costs = {
        "samplesPerSecond": {f: b.get("samplesPerSecond") for f, b in families.items()},
        "captionMs": {
            f: (latency.get(f) or {}).get("caption")
            or np.mean([s.get("latencyMsPerImage") or 0 for s in b["seeds"]])
            for f, b in families.items()
        },
        "classifyMs": {f: (latency.get(f) or {}).get("classify") for f in families},
        "learnedParameters": {f: learned_parameters(b) for f, b in families.items()},
    }
    measured = dict(measured or {"device": "cpu", "threads": 1})
    serving = {
        f: {k: costs[f"{k}Ms"][f] for k in ("caption", "classify") if costs[f"{k}Ms"][f]}
        for f in families
    }
    for f in families:
        if (latency.get(f) or {}).get("embed"):
            serving[f]["embed"] = latency[f]["embed"]
    seeds = {f: [s["seed"] for s in b["seeds"]] for f, b in families.items()}
    report = {
        "schema": REPORT_SCHEMA,
        "createdAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "title": f"{' vs '.join(families)} on {doc['dataset']['name']}",
        "dataset": doc["dataset"],
        "budget": doc.get("budget", {}),
        "metricsCreatedAt": doc.get("createdAt"),
        "families": list(families),
        "seeds": seeds,
        "configs": {f: b.get("config") for f, b in families.items()},
        "priors": prior_cells({f: b.get("config") for f, b in families.items()}),
        "curves": curves,
        "table": table,
        "checkpoints": checkpoint_selection(doc),
        "verdict": verdict(
            _summaries(doc),
            paired=doc.get("paired"),
            early=early or None,
            early_samples=early_at,
            costs=costs,
        ),
        "cost": cost_section(costs["samplesPerSecond"], serving, measured, nodes),
        "samples": {f: (b["seeds"][0].get("samples") or [])[:5] for f, b in families.items()},
        "probes": probes,
        "figures": {},
    }
    if doc.get("sweep"):
        report["sweep"] = sweep_of(doc)
    return report
