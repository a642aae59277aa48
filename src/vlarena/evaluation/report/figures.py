"""The report's static figures (PNG), drawn with matplotlib's object API (no pyplot state, so
workers can draw in threads)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from vlarena.evaluation.report.colours import CATEGORY_COLOURS, SELECTIVE_CURVES, family_colour
from vlarena.evaluation.report.comparison import metric_label, quality_groups
from vlarena.evaluation.report.sweep import COST_AXES, quality_points

DPI = 110


def _style(ax: Any) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(True, alpha=0.25, linewidth=0.6)
    ax.tick_params(labelsize=8)


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight", facecolor="white")
    return path


def _panels(count: int, cols: int, width: float = 3.6, height: float = 2.8) -> tuple[Figure, list]:
    rows = max(1, math.ceil(count / cols))
    cols = min(cols, max(count, 1))
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[count:]:
        ax.set_visible(False)
    return fig, axes[:count]


def learning_curves(report: Mapping[str, Any], path: Path) -> Path | None:
    """Quality against samples seen: mean over seeds, a band of ±1 std, each seed thinly."""
    curves = {k: v for k, v in report["curves"].items() if k != "loss"}
    if not curves:
        return None
    families = report["families"]
    fig, axes = _panels(len(curves), 3)
    for ax, (_name, entry) in zip(axes, sorted(curves.items()), strict=True):
        for fam, c in entry["families"].items():
            colour = family_colour(families, fam)
            x, mean, std = np.array(c["samplesSeen"]), np.array(c["mean"]), np.array(c["std"])
            for seed in c["seeds"]:
                ax.plot(x, seed, color=colour, alpha=0.25, linewidth=0.8)
            ax.fill_between(x, mean - std, mean + std, color=colour, alpha=0.18, linewidth=0)
            ax.plot(
                x,
                mean,
                color=colour,
                marker="o",
                markersize=3,
                label=f"{fam} (n={len(c['seeds'])})",
            )
        if entry.get("chance") is not None:
            ax.axhline(entry["chance"], color="#666", linestyle="--", linewidth=0.9, label="chance")
        ax.set_title(entry["label"], fontsize=9)
        ax.set_xlabel("samples seen", fontsize=8)
        _style(ax)
    axes[0].legend(fontsize=7, frameon=False)
    fig.suptitle("Learning curves (validation; mean ± std over seeds)", fontsize=10)
    return _save(fig, path)


def training_loss(report: Mapping[str, Any], path: Path) -> Path | None:
    """Each family's training loss (its own objective, so its own axis)."""
    entry = report["curves"].get("loss")
    if not entry:
        return None
    families = report["families"]
    fig, axes = _panels(len(entry["families"]), 2, 4.2, 2.6)
    for ax, (fam, c) in zip(axes, entry["families"].items(), strict=True):
        colour = family_colour(families, fam)
        x, mean, std = np.array(c["samplesSeen"]), np.array(c["mean"]), np.array(c["std"])
        ax.fill_between(x, mean - std, mean + std, color=colour, alpha=0.2, linewidth=0)
        ax.plot(x, mean, color=colour, marker="o", markersize=3)
        ax.set_title(f"{fam}: training loss (its own objective)", fontsize=9)
        ax.set_xlabel("samples seen", fontsize=8)
        _style(ax)
    return _save(fig, path)


def quality_bars(report: Mapping[str, Any], path: Path) -> Path | None:
    """Final test quality side by side, with error bars over seeds and chance marked."""
    groups = quality_groups(report["table"])
    if not groups:
        return None
    families = report["families"]
    sizes = [len(rows) for _, rows in groups]
    fig = Figure(
        figsize=(9, 0.3 * sum(sizes) * len(families) + 0.9 * len(groups)), layout="constrained"
    )
    axes = fig.subplots(len(groups), 1, squeeze=False, height_ratios=sizes).ravel()
    height = 0.8 / len(families)
    for ax, (title, rows) in zip(axes, groups, strict=True):
        for k, fam in enumerate(families):
            vals = [r["values"].get(fam) or {} for r in rows]
            ax.barh(
                np.arange(len(rows)) + k * height,
                [v.get("mean", np.nan) for v in vals],
                height=height,
                xerr=[v.get("std", 0.0) for v in vals],
                color=family_colour(families, fam),
                label=fam,
                error_kw={"linewidth": 0.8},
            )
        for i, r in enumerate(rows):
            if r.get("chance") is not None:
                ax.plot(
                    [r["chance"]] * 2,
                    [i - height / 2, i + 0.8 - height / 2],
                    color="black",
                    linewidth=1.4,
                )
        ax.set_yticks(
            np.arange(len(rows)) + 0.4 - height / 2, [r["label"] for r in rows], fontsize=8
        )
        ax.invert_yaxis()
        ax.set_title(title, fontsize=9)
        _style(ax)
    axes[0].legend(fontsize=8, frameon=False, loc="lower right")
    fig.suptitle("Final test quality (mean ± std over seeds; black ticks: chance)", fontsize=10)
    return _save(fig, path)


def budget_sweep(report: Mapping[str, Any], path: Path) -> Path | None:
    """Per use case, its primary metric (with its interval) against samples seen, training
    FLOPs and wall-clock, one line per family."""
    sweep = report.get("sweep")
    if not sweep or not sweep["useCases"]:
        return None
    cases = sweep["useCases"]
    fig = Figure(figsize=(3.6 * len(COST_AXES), 2.8 * len(cases)), layout="constrained")
    grid = fig.subplots(len(cases), len(COST_AXES), squeeze=False)
    for row, case in zip(grid, cases, strict=True):
        for ax, axis in zip(row, COST_AXES, strict=True):
            for fam in sweep["families"]:
                line = quality_points(sweep, case, fam, axis)
                mean = np.array(line["mean"])
                ax.errorbar(
                    line["x"],
                    mean,
                    yerr=[mean - np.array(line["low"]), np.array(line["high"]) - mean],
                    color=family_colour(report["families"], fam),
                    marker="o",
                    markersize=3,
                    capsize=2,
                    linewidth=1,
                    label=fam,
                )
            ax.set_xscale("log")
            # A sweep spans about a decade: labelled minor ticks would overlap.
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel(COST_AXES[axis], fontsize=8)
            _style(ax)
        row[0].set_ylabel(metric_label(case["primary"]), fontsize=8)
        row[0].set_title(case["label"], fontsize=9, loc="left")
    grid[0][0].legend(fontsize=7, frameon=False)
    fig.suptitle(
        f"Budget sweep over {', '.join(sweep['labels'])}: each use case's primary metric "
        "(test split, 95% interval) against the cost of training",
        fontsize=10,
    )
    return _save(fig, path)


def selective_decoding(result: Mapping[str, Any], path: Path) -> Path:
    """CIDEr against decoding operations (uniform, selective, raw-feature segmentation), and
    one stream's segments."""
    fig = Figure(figsize=(10, 6.6), layout="constrained")
    # Two rows make an array of subfigures (a single one only for a 1x1 grid).
    top, bottom = cast(np.ndarray, fig.subfigures(2, 1, height_ratios=[3, 1.8]))
    ax = top.subplots()
    markers = {"uniform": "s", "selective": "o", "rawFeature": "D"}
    for key, (name, colour) in SELECTIVE_CURVES.items():
        pts = sorted(result[key], key=lambda p: p["decodes"])
        ax.plot(
            [p["decodes"] for p in pts],
            [p["cider"] for p in pts],
            marker=markers[key],
            color=colour,
            label=name,
            markersize=4,
        )
    oracle = result["oracle"]
    ax.plot(
        [oracle["decodes"]],
        [oracle["cider"]],
        marker="*",
        color="black",
        markersize=10,
        linestyle="none",
        label="true segments",
    )
    target = result["everyFrameCider"]
    ax.axhline(
        target,
        color="#3b6fb6",
        linestyle="--",
        linewidth=0.9,
        label="CIDEr of decoding every frame",
    )
    for curve in ("uniform", "selective"):
        if ops := result.get(f"{curve}OpsAtEveryFrameCider"):
            ax.axvline(ops, color=SELECTIVE_CURVES[curve][1], linestyle=":", linewidth=0.9)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("text decodes per 64-frame stream (log scale)", fontsize=9)
    ax.set_ylabel("CIDEr-D per frame", fontsize=9)
    head = result["headline"]
    ratio, raw = head["selective"]["ratio"], head["rawFeature"]["ratio"]
    every = result.get("ratioVsEveryFrame")
    ax.set_title(
        "Selective decoding: "
        + (
            f"{ratio:.2f}× fewer decodes than uniform at equal CIDEr (paper {head['paper']:.2f}×)"
            if ratio
            else "equal CIDEr not reached"
        )
        + (f", raw features {raw:.2f}×" if raw else "")
        + (f", {every:.1f}× fewer than every frame" if every else ""),
        fontsize=10,
    )
    ax.legend(fontsize=8, frameon=False)
    _style(ax)
    example = result["example"]
    frames = np.array(example["frames"], dtype=np.uint8)
    n = len(frames)
    strip = np.concatenate(list(frames), axis=1)
    axs = bottom.subplots(4, 1, height_ratios=[2.2, 0.5, 0.5, 0.5], sharex=True)
    axs[0].imshow(strip, cmap="gray", extent=(0, n, 0, 1), aspect="auto")
    axs[0].set_title(
        "one stream (frame thumbnails), its true segments and the segments Ward clustering "
        "found in predicted embeddings and in raw features",
        fontsize=9,
    )
    for ax2, key, label in (
        (axs[1], "trueStarts", "true"),
        (axs[2], "foundStarts", "found"),
        (axs[3], "rawFeatureStarts", "raw"),
    ):
        bounds = [*example[key], n]
        for i, (a, b) in enumerate(itertools.pairwise(bounds)):
            ax2.axvspan(a, b, color=CATEGORY_COLOURS[i % len(CATEGORY_COLOURS)], alpha=0.85)
        ax2.set_yticks([0.5], [label], fontsize=8)
        ax2.set_ylim(0, 1)
    for ax2 in axs:
        ax2.set_xlim(0, n)
        ax2.tick_params(labelsize=7)
    axs[0].set_yticks([])
    axs[3].set_xlabel("frame", fontsize=8)
    return _save(fig, path)


def _overlay(
    ax: Any, image: np.ndarray, weights: np.ndarray, side: int, title: str, fontsize: int = 10
) -> None:
    """A token heatmap (side × side, scaled to its own maximum) over a dimmed grey image."""
    h, w = image.shape
    ax.imshow(image, cmap="gray", extent=(0, w, h, 0), vmin=0, vmax=600)  # dimmed
    ax.imshow(
        weights.reshape(side, side),
        cmap="inferno",
        alpha=0.7,
        extent=(0, w, h, 0),
        interpolation="nearest",
        vmin=0,
        vmax=max(float(weights.max()), 1e-9),
    )
    for k in range(1, side):  # token boundaries
        ax.axhline(k * h / side, color="white", linewidth=0.3, alpha=0.5)
        ax.axvline(k * w / side, color="white", linewidth=0.3, alpha=0.5)
    ax.set_title(title, fontsize=fontsize)
    ax.set_xticks([])
    ax.set_yticks([])


def cross_attention(data: Mapping[str, Any], path: Path, max_tokens: int = 10) -> Path | None:
    """Per generated token, the token VLM's cross-attention over the image's visual tokens."""
    examples = data.get("examples") or []
    if not examples:
        return None
    side = data["tokensSide"]
    cols = 1 + min(max_tokens, max(len(e["tokens"]) for e in examples))
    fig, axes = _image_grid(len(examples), cols, 1.6, 1.9)
    for row, e in zip(axes, examples, strict=True):
        image = _input_cell(row[0], e["image"])
        for k, ax in enumerate(row[1:]):
            if k < len(e["tokens"]):
                _overlay(ax, image, np.array(e["weights"][k]), side, e["tokens"][k])
            else:
                ax.set_visible(False)
    fig.suptitle(
        "Token VLM: cross-attention of each generated token over the 4×4 visual tokens", fontsize=10
    )
    return _save(fig, path)


def _image_grid(rows: int, cols: int, width: float, height: float) -> tuple[Figure, Any]:
    """A figure of rows × cols image cells. A grid of images needs no layout solver (slow with
    many axes): fixed gaps suffice."""
    fig = Figure(figsize=(width * cols, height * rows + 0.4))
    axes = fig.subplots(rows, cols, squeeze=False)
    fig.subplots_adjust(
        left=0.01,
        right=0.99,
        bottom=0.02,
        top=1 - 0.5 / fig.get_figheight(),
        wspace=0.08,
        hspace=0.3,
    )
    return fig, axes


def _input_cell(ax: Any, pixels: Any) -> np.ndarray:
    """The first cell of a row: the input image, titled, without ticks."""
    image = np.array(pixels, dtype=np.uint8)
    ax.imshow(image, cmap="gray")
    ax.set_title("input", fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    return image


def predictor_attention(data: Mapping[str, Any], path: Path) -> Path | None:
    """The VL-JEPA predictor's attention from a question's tokens to the visual tokens."""
    examples = data.get("examples") or []
    if not examples:
        return None
    side = data["tokensSide"]
    cols = 1 + max(len(e["queries"]) for e in examples)
    fig, axes = _image_grid(len(examples), cols, 2.0, 2.2)
    for row, e in zip(axes, examples, strict=True):
        image = _input_cell(row[0], e["image"])
        for ax, q in zip(row[1:], e["queries"], strict=False):
            _overlay(ax, image, np.array(q["layers"][-1]), side, q["query"] or "no query", 8)
        for ax in row[1 + len(e["queries"]) :]:
            ax.set_visible(False)
    fig.suptitle(
        "VL-JEPA predictor: attention from the question's tokens to the visual tokens (last layer)",
        fontsize=10,
    )
    return _save(fig, path)


def embedding_maps(data: Mapping[str, Any], path: Path) -> Path | None:
    """PCA and t-SNE of predicted and target embeddings, coloured by category."""
    if not data:
        return None
    cats = data["categories"] * 2
    names = sorted(set(cats))
    colour = {c: CATEGORY_COLOURS[i % len(CATEGORY_COLOURS)] for i, c in enumerate(names)}
    kinds = data["kinds"]
    fig = Figure(figsize=(11, 4.6), layout="constrained")
    axes = fig.subplots(1, 2)
    explained = data.get("pcaExplained") or [0, 0]
    for ax, key, title in (
        (axes[0], "pca", f"PCA ({100 * sum(explained):.0f}% of variance)"),
        (axes[1], "tsne", "t-SNE"),
    ):
        xy = np.array(data[key])
        for kind, marker, size in (("target", "x", 22), ("predicted", "o", 12)):
            idx = [i for i, k in enumerate(kinds) if k == kind]
            ax.scatter(
                xy[idx, 0],
                xy[idx, 1],
                c=[colour[cats[i]] for i in idx],
                marker=marker,
                s=size,
                linewidths=0.9,
                alpha=0.8,
            )
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [axes[1].scatter([], [], color=colour[c], label=c, s=14) for c in names]
    handles += [
        axes[1].scatter([], [], color="#444", marker="o", s=12, label="predicted (image)"),
        axes[1].scatter([], [], color="#444", marker="x", s=22, label="target (caption)"),
    ]
    axes[1].legend(
        handles=handles,
        fontsize=7,
        frameon=False,
        loc="center left",
        bbox_to_anchor=(1.0, 0.5),
        title=data["colouredBy"],
        title_fontsize=7,
    )
    fig.suptitle(
        f"VL-JEPA embeddings of {data['points']} test images and their captions "
        f"(mean cosine predicted·target {data['meanCosinePredictedTarget']:.2f})",
        fontsize=10,
    )
    return _save(fig, path)


def zeroshot_confusion(data: Mapping[str, Mapping[str, Any]], path: Path) -> Path | None:
    """Row-normalised zero-shot confusion matrices, one per family."""
    data = {f: d for f, d in data.items() if d}
    if not data:
        return None
    fig = Figure(figsize=(5.0 * len(data), 4.8))
    axes = fig.subplots(1, len(data), squeeze=False).ravel()
    fig.subplots_adjust(left=0.12, right=0.98, bottom=0.2, top=0.92, wspace=0.35)
    for ax, (fam, d) in zip(axes, data.items(), strict=True):
        counts = np.array(d["counts"], dtype=float)
        rates = counts / counts.sum(1, keepdims=True).clip(min=1)
        ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
        classes = d["classes"]
        ax.set_xticks(range(len(classes)), classes, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(classes)), classes, fontsize=7)
        for i in range(len(classes)):
            for j in range(len(classes)):
                if counts[i, j]:
                    ax.text(
                        j,
                        i,
                        int(counts[i, j]),
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="white" if rates[i, j] > 0.5 else "black",
                    )
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
        ax.set_title(f"{fam}: zero-shot top-1 {d['accuracy']:.1%} (n={d['n']})", fontsize=9)
    return _save(fig, path)


def draw_all(report: Mapping[str, Any], out_dir: Path) -> dict[str, str]:
    """Every figure the report's data allows, as {name: path relative to the report}."""
    probes = report.get("probes") or {}
    jobs: dict[str, Callable[[Path], Path | None]] = {
        "learning_curves": lambda p: learning_curves(report, p),
        "training_loss": lambda p: training_loss(report, p),
        "quality": lambda p: quality_bars(report, p),
    }
    if report.get("sweep"):
        jobs["budget_sweep"] = lambda p: budget_sweep(report, p)
    if probes.get("selectiveDecoding"):
        jobs["selective_decoding"] = lambda p: selective_decoding(probes["selectiveDecoding"], p)
    if probes.get("crossAttention"):
        jobs["cross_attention"] = lambda p: cross_attention(probes["crossAttention"], p)
    if probes.get("predictorAttention"):
        jobs["predictor_attention"] = lambda p: predictor_attention(probes["predictorAttention"], p)
    if probes.get("embeddingMap"):
        jobs["embedding_maps"] = lambda p: embedding_maps(probes["embeddingMap"], p)
    if probes.get("zeroshotConfusion"):
        jobs["zeroshot_confusion"] = lambda p: zeroshot_confusion(probes["zeroshotConfusion"], p)
    out = {}
    for name, draw in jobs.items():
        written = draw(out_dir / "figures" / f"{name}.png")
        if written:
            out[name] = f"figures/{name}.png"
    return out
