"""Terminal tables of metrics.json documents and evaluation results."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def _fmt(value: float | None) -> str:
    if value is None:
        return "–"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3f}"


def metrics_table(doc: dict[str, Any]) -> Table:
    """Families side by side: mean ± std over seeds, chance and z beside each learned metric."""
    families = doc["families"]
    table = Table(title=f"{doc['dataset']['name']} · budget {doc['budget']}", show_lines=False)
    table.add_column("metric")
    for name in families:
        table.add_column(name, justify="right")
    table.add_column("chance", justify="right")
    table.add_row(
        "learned params",
        *[f"{f.get('learnedParameters', f['trainableParameters']):,}" for f in families.values()],
        "",
    )
    table.add_row(
        "samples/s (train)", *[_fmt(f["samplesPerSecond"]) for f in families.values()], ""
    )
    latency = [f["seeds"][0].get("latencyMsPerImage") for f in families.values()]
    table.add_row("latency ms/image", *[_fmt(v) for v in latency], "")
    names = sorted({m for f in families.values() for m in f["summary"]})
    for metric in names:
        cells, chance = [], None
        for fam in families.values():
            s = fam["summary"].get(metric)
            if s is None:
                cells.append("–")
                continue
            chance = s["chance"]
            z = [
                seed["metrics"][metric].get("z")
                for seed in fam["seeds"]
                if metric in seed["metrics"]
            ]
            zs = f" z={min(z):.0f}" if z and None not in z else ""
            spread = f"±{s['std']:.3f}" if s["seeds"] > 1 else ""
            cells.append(f"{s['mean']:.3f}{spread}{zs}")
        table.add_row(metric, *cells, _fmt(chance))
    return table


def print_metrics_table(doc: dict[str, Any]) -> None:
    Console().print(metrics_table(doc))


def print_evaluation(result: dict[str, Any]) -> None:
    table = Table(title="evaluation")
    for col in ("metric", "value", "chance", "z"):
        table.add_column(col, justify="right" if col != "metric" else "left")
    for name, m in sorted(result["metrics"].items()):
        table.add_row(name, _fmt(m["value"]), _fmt(m["chance"]), _fmt(m["z"]))
    table.add_row("trainable params", f"{result['trainable_parameters']:,}", "", "")
    Console().print(table)
