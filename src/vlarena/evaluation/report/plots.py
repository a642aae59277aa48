"""The page's interactive plots: Plotly figures built from report.json (no torch, no files)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from vlarena.evaluation.report.colours import CATEGORY_COLOURS, SELECTIVE_CURVES, family_colour
from vlarena.evaluation.report.comparison import metric_label, quality_groups
from vlarena.evaluation.report.sweep import COST_AXES, quality_points

FONT = {"family": "system-ui, -apple-system, Segoe UI, sans-serif", "size": 12}


def _layout(fig: go.Figure, height: int, **extra: Any) -> go.Figure:
    layout = {
        "height": height,
        "margin": {"l": 50, "r": 20, "t": 50, "b": 45},
        "font": FONT,
        "plot_bgcolor": "white",
        "paper_bgcolor": "white",
        "hovermode": "closest",
        "legend": {"orientation": "h", "y": -0.15},
    }
    fig.update_layout(**(layout | extra))
    fig.update_xaxes(gridcolor="#e6e6e6", zeroline=False)
    fig.update_yaxes(gridcolor="#e6e6e6", zeroline=False)
    return fig


def _rgba(hex_colour: str, alpha: float) -> str:
    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def learning_curves(report: Mapping[str, Any], names: list[str] | None = None) -> go.Figure | None:
    curves = report["curves"]
    names = names or sorted(k for k in curves if k != "loss")
    if not names:
        return None
    families = report["families"]
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig = make_subplots(rows, cols, subplot_titles=[curves[n]["label"] for n in names])
    for i, name in enumerate(names):
        r, c = divmod(i, cols)
        entry = curves[name]
        for fam, cur in entry["families"].items():
            colour = family_colour(families, fam)
            x = cur["samplesSeen"]
            upper = [m + s for m, s in zip(cur["mean"], cur["std"], strict=True)]
            lower = [m - s for m, s in zip(cur["mean"], cur["std"], strict=True)]
            common = {"row": r + 1, "col": c + 1}
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=upper,
                    mode="lines",
                    line={"width": 0},
                    showlegend=False,
                    hoverinfo="skip",
                    legendgroup=fam,
                ),
                **common,
            )
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=lower,
                    mode="lines",
                    line={"width": 0},
                    fill="tonexty",
                    fillcolor=_rgba(colour, 0.18),
                    showlegend=False,
                    hoverinfo="skip",
                    legendgroup=fam,
                ),
                **common,
            )
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=cur["mean"],
                    customdata=cur["std"],
                    mode="lines+markers",
                    name=f"{fam} (mean of {len(cur['seeds'])} seeds ± std)",
                    line={"color": colour},
                    legendgroup=fam,
                    showlegend=i == 0,
                    hovertemplate=f"{fam}<br>%{{x:,}} samples<br>%{{y:.3f}} ± %{{customdata:.3f}}<extra></extra>",
                ),
                **common,
            )
        if entry.get("chance") is not None:
            xs = [x for cur in entry["families"].values() for x in cur["samplesSeen"]]
            fig.add_trace(
                go.Scatter(
                    x=[min(xs), max(xs)],
                    y=[entry["chance"]] * 2,
                    mode="lines",
                    name="chance",
                    line={"color": "#666", "dash": "dash", "width": 1},
                    legendgroup="chance",
                    showlegend=i == 0,
                    hovertemplate="chance %{y:.3f}<extra></extra>",
                ),
                row=r + 1,
                col=c + 1,
            )
    fig.update_xaxes(title_text="samples seen", title_font={"size": 10})
    return _layout(fig, 300 * rows + 40)


def training_loss(report: Mapping[str, Any]) -> go.Figure | None:
    entry = report["curves"].get("loss")
    if not entry:
        return None
    families = report["families"]
    fams = list(entry["families"])
    fig = make_subplots(1, len(fams), subplot_titles=[f"{f}: training loss" for f in fams])
    for i, fam in enumerate(fams):
        cur = entry["families"][fam]
        fig.add_trace(
            go.Scatter(
                x=cur["samplesSeen"],
                y=cur["mean"],
                name=fam,
                mode="lines+markers",
                line={"color": family_colour(families, fam)},
                error_y={"type": "data", "array": cur["std"], "visible": True, "thickness": 1},
                hovertemplate=f"{fam}<br>%{{x:,}} samples<br>loss %{{y:.4f}}<extra></extra>",
            ),
            row=1,
            col=i + 1,
        )
    fig.update_xaxes(title_text="samples seen", title_font={"size": 10})
    return _layout(fig, 320, showlegend=False)


def quality_bars(report: Mapping[str, Any]) -> go.Figure | None:
    groups = quality_groups(report["table"])
    if not groups:
        return None
    families = report["families"]
    sizes = [len(rows) for _, rows in groups]
    fig = make_subplots(
        len(groups),
        1,
        row_heights=[n / sum(sizes) for n in sizes],
        subplot_titles=[title for title, _ in groups],
        vertical_spacing=0.12 if len(groups) > 1 else 0.0,
    )
    for g, (_, rows) in enumerate(groups):
        labels = [r["label"] for r in rows]
        for fam in families:
            vals = [(r["values"].get(fam) or {}) for r in rows]
            fig.add_trace(
                go.Bar(
                    y=labels,
                    x=[v.get("mean") for v in vals],
                    orientation="h",
                    name=fam,
                    legendgroup=fam,
                    showlegend=g == 0,
                    marker_color=family_colour(families, fam),
                    error_x={
                        "type": "data",
                        "array": [v.get("std", 0) for v in vals],
                        "thickness": 1,
                    },
                    customdata=[[v.get("std", 0), v.get("seeds", 0)] for v in vals],
                    hovertemplate=f"{fam}<br>%{{y}}: %{{x:.3f}} ± %{{customdata[0]:.3f}} (%{{customdata[1]}} seeds)<extra></extra>",
                ),
                row=g + 1,
                col=1,
            )
        fig.add_trace(
            go.Scatter(
                y=labels,
                x=[r.get("chance") for r in rows],
                mode="markers",
                name="chance",
                legendgroup="chance",
                showlegend=g == 0,
                marker={
                    "symbol": "line-ns-open",
                    "size": 18,
                    "color": "black",
                    "line": {"width": 2},
                },
                hovertemplate="chance %{x:.3f}<extra></extra>",
            ),
            row=g + 1,
            col=1,
        )
        fig.update_yaxes(autorange="reversed", row=g + 1, col=1)
    height = 90 * len(groups) + 17 * sum(sizes) * (len(families) + 1)
    return _layout(fig, height, barmode="group")


def budget_sweep(report: Mapping[str, Any]) -> go.Figure | None:
    """Per use case, its primary metric against each cost of training, one line per family."""
    sweep = report.get("sweep")
    if not sweep or not sweep["useCases"]:
        return None
    cases = sweep["useCases"]
    families = report["families"]
    fig = make_subplots(
        len(cases),
        len(COST_AXES),
        subplot_titles=[
            f"{c['label']}: {metric_label(c['primary'])}" if col == 0 else ""
            for c in cases
            for col in range(len(COST_AXES))
        ],
        horizontal_spacing=0.06,
    )
    for r, case in enumerate(cases):
        for c, axis in enumerate(COST_AXES):
            for fam in sweep["families"]:
                line = quality_points(sweep, case, fam, axis)
                fig.add_trace(
                    go.Scatter(
                        x=line["x"],
                        y=line["mean"],
                        text=line["budget"],
                        customdata=list(zip(line["low"], line["high"], strict=True)),
                        mode="lines+markers",
                        name=fam,
                        legendgroup=fam,
                        showlegend=r == 0 and c == 0,
                        line={"color": family_colour(families, fam)},
                        error_y={
                            "type": "data",
                            "symmetric": False,
                            "array": [
                                h - m for h, m in zip(line["high"], line["mean"], strict=True)
                            ],
                            "arrayminus": [
                                m - lo for lo, m in zip(line["low"], line["mean"], strict=True)
                            ],
                            "thickness": 1,
                        },
                        hovertemplate=f"{fam} at %{{text}}<br>%{{x:.3s}}<br>%{{y:.3f}} "
                        "[%{customdata[0]:.3f}, %{customdata[1]:.3f}]<extra></extra>",
                    ),
                    row=r + 1,
                    col=c + 1,
                )
            fig.update_xaxes(
                type="log",
                title_text=COST_AXES[axis],
                title_font={"size": 10},
                row=r + 1,
                col=c + 1,
            )
    return _layout(fig, 300 * len(cases) + 60)


def selective_decoding(result: Mapping[str, Any]) -> go.Figure:
    fig = go.Figure()
    symbols = {"uniform": "square", "selective": "circle", "rawFeature": "diamond"}
    for key, (name, colour) in SELECTIVE_CURVES.items():
        symbol = symbols[key]
        pts = sorted(result[key], key=lambda p: p["decodes"])
        setting = [
            f"every {p['every']} frames"
            if key == "uniform"
            else f"{p['segments']} segments, boundary F1 {p['boundaryF1']:.2f}"
            for p in pts
        ]
        fig.add_trace(
            go.Scatter(
                x=[p["decodes"] for p in pts],
                y=[p["cider"] for p in pts],
                text=setting,
                customdata=[p["bleu4"] for p in pts],
                name=name,
                mode="lines+markers",
                line={"color": colour},
                marker={"symbol": symbol},
                hovertemplate=f"{name}: %{{text}}<br>%{{x:.2f}} decodes/stream<br>CIDEr %{{y:.3f}}, BLEU-4 %{{customdata:.3f}}<extra></extra>",
            )
        )
    o = result["oracle"]
    fig.add_trace(
        go.Scatter(
            x=[o["decodes"]],
            y=[o["cider"]],
            mode="markers",
            name="true segments",
            marker={"symbol": "star", "size": 14, "color": "black"},
            hovertemplate="true segments<br>%{x:.2f} decodes/stream<br>CIDEr %{y:.3f}<extra></extra>",
        )
    )
    xs = [p["decodes"] for key in SELECTIVE_CURVES for p in result[key]]
    fig.add_trace(
        go.Scatter(
            x=[min(xs), max(xs)],
            y=[result["everyFrameCider"]] * 2,
            mode="lines",
            name="CIDEr of decoding every frame",
            line={"color": "#3b6fb6", "dash": "dash", "width": 1},
            hovertemplate="every frame: CIDEr %{y:.3f}<extra></extra>",
        )
    )
    ticks = [1, 2, 4, 8, 16, 32, 64]
    fig.update_xaxes(
        type="log",
        tickvals=ticks,
        ticktext=[str(t) for t in ticks],
        title_text="text decodes per 64-frame stream (log scale)",
    )
    fig.update_yaxes(title_text="CIDEr-D per frame")
    return _layout(fig, 420)


def embedding_maps(data: Mapping[str, Any]) -> go.Figure:
    fig = make_subplots(1, 2, subplot_titles=["PCA", "t-SNE"])
    cats = data["categories"] * 2
    names = sorted(set(cats))
    for col, key in ((1, "pca"), (2, "tsne")):
        xy = data[key]
        for ci, cat in enumerate(names):
            for kind, symbol in (("predicted", "circle"), ("target", "x")):
                idx = [
                    i
                    for i, (c, k) in enumerate(zip(cats, data["kinds"], strict=True))
                    if c == cat and k == kind
                ]
                if not idx:
                    continue
                fig.add_trace(
                    go.Scatter(
                        x=[xy[i][0] for i in idx],
                        y=[xy[i][1] for i in idx],
                        mode="markers",
                        name=f"{cat} · {kind}",
                        legendgroup=f"{cat}-{kind}",
                        showlegend=col == 1,
                        marker={
                            "color": CATEGORY_COLOURS[ci % len(CATEGORY_COLOURS)],
                            "symbol": symbol,
                            "size": 6 if kind == "predicted" else 7,
                            "opacity": 0.8,
                        },
                        text=[data["captions"][i % data["points"]] for i in idx],
                        hovertemplate=f"{kind}<br>%{{text}}<extra>{cat}</extra>",
                    ),
                    row=1,
                    col=col,
                )
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    return _layout(fig, 520, legend={"orientation": "v", "x": 1.02, "y": 1, "font": {"size": 10}})


def zeroshot_confusion(data: Mapping[str, Mapping[str, Any]]) -> go.Figure | None:
    data = {f: d for f, d in data.items() if d}
    if not data:
        return None
    fams = list(data)
    fig = make_subplots(
        1,
        len(fams),
        subplot_titles=[f"{f}: top-1 {d['accuracy']:.1%} (n={d['n']})" for f, d in data.items()],
        horizontal_spacing=0.12,
    )
    for i, fam in enumerate(fams):
        d = data[fam]
        counts = d["counts"]
        rates = [[c / max(1, sum(row)) for c in row] for row in counts]
        fig.add_trace(
            go.Heatmap(
                z=rates,
                x=d["classes"],
                y=d["classes"],
                customdata=counts,
                colorscale="Blues",
                zmin=0,
                zmax=1,
                showscale=i == len(fams) - 1,
                hovertemplate="true %{y}<br>predicted %{x}<br>%{customdata} (%{z:.0%} of the row)<extra></extra>",
            ),
            row=1,
            col=i + 1,
        )
        fig.update_yaxes(autorange="reversed", row=1, col=i + 1)
    fig.update_xaxes(tickangle=-50)
    return _layout(fig, 460)


def cross_attention(data: Mapping[str, Any]) -> go.Figure | None:
    examples = data.get("examples") or []
    if not examples:
        return None
    side = data["tokensSide"]
    cells = [f"r{i // side}c{i % side}" for i in range(side * side)]
    fig = make_subplots(
        1,
        len(examples),
        subplot_titles=[e["generated"][:60] for e in examples],
        horizontal_spacing=0.15,
    )
    for i, e in enumerate(examples):
        labels = [f"{k}: {t}" for k, t in enumerate(e["tokens"])]
        fig.add_trace(
            go.Heatmap(
                z=e["weights"],
                x=cells,
                y=labels,
                colorscale="Magma",
                zmin=0,
                showscale=i == len(examples) - 1,
                hovertemplate="token %{y}<br>visual token %{x}<br>attention %{z:.3f}<extra></extra>",
            ),
            row=1,
            col=i + 1,
        )
        fig.update_yaxes(autorange="reversed", row=1, col=i + 1)
    fig.update_xaxes(
        title_text="visual token (row, column of the 4×4 grid)",
        title_font={"size": 10},
        tickfont={"size": 8},
    )
    tokens = max(len(e["tokens"]) for e in examples)
    return _layout(fig, max(360, 22 * tokens + 120))
