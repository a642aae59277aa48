"""The report as one self-contained HTML page: plain HTML and CSS, PNG figures inlined, Plotly's
JavaScript shipped inside the page (no CDN), links to the artifacts. Imports no torch, so the
gateway can render it at request time."""

from __future__ import annotations

import base64
import html
import json
import os
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from vlarena.evaluation.report import plots
from vlarena.evaluation.report.colours import family_colour
from vlarena.files import atomic_write_text
from vlarena.rundirs import METRICS_FILE

REPORT_FILE = "report.json"
PAGE_FILE = "report.html"
Link = Callable[[str], str]

CSS = """
:root { --ink: #1d232b; --muted: #5b6573; --line: #dde2e8; --bg: #f6f7f9; --accent: #3b6fb6; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--ink);
  background: var(--bg); }
header { background: #1d232b; color: #fff; padding: 28px 40px 22px; }
header h1 { margin: 0 0 6px; font-size: 26px; font-weight: 650; }
header p { margin: 0; color: #c9d1db; }
nav { position: sticky; top: 0; z-index: 5; background: #fff; border-bottom: 1px solid var(--line);
  padding: 8px 40px; display: flex; gap: 18px; flex-wrap: wrap; font-size: 14px; }
nav a { color: var(--accent); text-decoration: none; }
main { max-width: 1240px; margin: 0 auto; padding: 10px 40px 60px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 18px 24px;
  margin: 22px 0; }
h2 { margin: 0 0 10px; font-size: 20px; }
h3 { margin: 18px 0 8px; font-size: 16px; }
p.note, .note { color: var(--muted); font-size: 13px; }
table { border-collapse: collapse; width: 100%; font-size: 14px; }
th, td { padding: 6px 10px; border-bottom: 1px solid var(--line); text-align: right;
  vertical-align: top; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f0f2f5; position: sticky; top: 0; }
tr.group td { background: #fafbfc; font-weight: 600; text-align: left; color: var(--muted);
  font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
td.best { font-weight: 700; }
td .spread { color: var(--muted); font-size: 12px; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(260px, 1fr)); gap: 14px; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; }
.card .use { font-size: 13px; color: var(--muted); }
.card .winner { font-size: 18px; font-weight: 650; margin: 4px 0; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; color: #fff; font-size: 13px; }
ul.facts { margin: 8px 0 0; padding-left: 20px; }
.plot { width: 100%; min-height: 300px; }
figure { margin: 10px 0; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 6px; }
figcaption { color: var(--muted); font-size: 13px; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(280px, 1fr)); gap: 14px; }
.gallery img { width: 100%; height: 180px; object-fit: contain; background: #fff; }
.samples td, .samples th { text-align: left; }
.samples td { font-family: ui-monospace, monospace; font-size: 12px; }
.samples td:nth-child(-n+2) { white-space: nowrap; }
code { background: #f0f2f5; padding: 1px 4px; border-radius: 4px; }
.stat { font-size: 28px; font-weight: 700; }
"""


@lru_cache(maxsize=1)
def plotly_js() -> str:
    """Plotly's JavaScript bundle, from the installed Python package (inlined in every page)."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "–"
    if abs(value) >= 1e9:  # FLOPs
        return f"{value:.2e}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.1f}"
    return f"{value:.{digits}f}"


def _money(value: float | None) -> str:
    if value is None:
        return "not measured"
    return f"${value:,.2f}" if value >= 0.01 else f"${value:.4f}"


def _hours(value: float | None) -> str:
    return "–" if value is None else (f"{value:,.1f}" if value >= 1 else f"{value:.3f}")


def _scale(value: float) -> str:
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= factor:
            return f"{value / factor:g}{suffix}"
    return f"{value:g}"


class Page:
    """Collects sections and plot specifications, then writes them as one document."""

    def __init__(self, report_dir: Path) -> None:
        self.report_dir = report_dir
        self.plots: list[tuple[str, str]] = []
        self.shown: set[str] = set()  # figures already in the page

    def plot(self, figure: Any, caption: str = "") -> str:
        if figure is None:
            return ""
        pid = f"plot-{len(self.plots)}"
        self.plots.append((pid, figure.to_json()))
        cap = f"<figcaption>{_e(caption)}</figcaption>" if caption else ""
        return f'<figure><div class="plot" id="{pid}" role="img" aria-label="{_e(caption)}"></div>{cap}</figure>'

    def image(self, relative: str | None, alt: str, caption: str = "") -> str:
        if not relative:
            return ""
        path = self.report_dir / relative
        if not path.is_file():
            return ""
        self.shown.add(relative)
        data = base64.b64encode(path.read_bytes()).decode()
        cap = f"<figcaption>{_e(caption)}</figcaption>" if caption else ""
        return f'<figure><img src="data:image/png;base64,{data}" alt="{_e(alt)}">{cap}</figure>'

    def scripts(self) -> str:
        # "</" inside a script element would end it early
        specs = "".join(
            f'<script type="application/json" id="{pid}-spec">{spec.replace("</", "<" + chr(92) + "/")}</script>'
            for pid, spec in self.plots
        )
        boot = """<script>
document.querySelectorAll('.plot').forEach(function (div) {
  var spec = JSON.parse(document.getElementById(div.id + '-spec').textContent);
  Plotly.newPlot(div, spec.data, spec.layout, {responsive: true, displaylogo: false});
});
</script>"""
        return specs + boot


# --- sections ---------------------------------------------------------------------------------
def _verdict(report: Mapping[str, Any]) -> str:
    v = report["verdict"]
    families = report["families"]
    colours = {f: family_colour(families, f) for f in families}

    def badge(fam: str | None) -> str:
        if not fam:
            return '<span class="badge" style="background:#8a94a3">no clear winner</span>'
        return f'<span class="badge" style="background:{colours[fam]}">{_e(fam)}</span>'

    cards = "".join(
        f'<div class="card"><div class="use">{_e(u["label"])}</div>'
        f'<div class="winner">{badge(u["winner"])}</div><div>{_e(u["sentence"])}</div></div>'
        for u in v["useCases"]
    )
    facts = "".join(f"<li>{_e(e['sentence'])}</li>" for e in v["efficiency"])
    return (
        '<section id="verdict"><h2>Verdict: which to use when</h2>'
        f'<div class="cards">{cards}</div><ul class="facts">{facts}</ul>'
        '<p class="note">Computed from the measured numbers below. Each use case is decided by '
        "one primary metric (named in its sentence; the others are shown and never decide): "
        "both families are scored on the same test items, and the difference between them gets "
        "an interval from resampling those items and the seeds, at 95% corrected for the number "
        "of use cases decided together. A family wins when the interval excludes zero and it is "
        "above chance; the families are equal when the interval lies within the equivalence "
        "margin (2 points of an accuracy, 5% of a caption score); otherwise the sentence says "
        "how many more seeds would settle it. Fewer than 3 seeds per family give no verdict."
        "</p></section>"
    )


def _priors(report: Mapping[str, Any]) -> str:
    cells = report.get("priors") or []
    if not cells:
        return ""
    priors = list(dict.fromkeys(c["prior"] for c in cells))
    rows = []
    for fam in dict.fromkeys(c["family"] for c in cells):
        tds = []
        for prior in priors:
            c = next(x for x in cells if x["family"] == fam and x["prior"] == prior)
            mark = "<b>ran</b>" if c["ran"] else '<span class="spread">not run</span>'
            tds.append(f"<td>{mark}: {_e(c['startsFrom'])}</td>")
        rows.append(f"<tr><td>{_e(fam)}</td>{''.join(tds)}</tr>")
    head = "".join(f"<th>{_e(p)} prior</th>" for p in priors)
    return (
        '<section id="priors"><h2>Priors: where each family\'s text side starts</h2>'
        f"<table><thead><tr><th>family</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody>"
        '</table><p class="note">The comparison is a 2×2 of family × prior; this job ran the '
        "cells marked. Each pairing answers its own question: matched priors ask which "
        "objective learns more from the same start, mismatched ones compare the families as "
        "each is usually built. Other cells run with the per-family configuration "
        "(<code>--family-config token-vlm:text_prior=pretrained</code>).</p></section>"
    )


def _sweep(report: Mapping[str, Any], page: Page) -> str:
    sweep = report.get("sweep")
    if not sweep:
        return ""
    families = report["families"]
    facts = "".join(f"<li>{_e(line)}</li>" for line in sweep["summary"])
    head = "".join(f"<th>{_e(b)}</th>" for b in sweep["labels"])
    rows = []
    for case in sweep["useCases"]:
        cells = []
        for i, d in enumerate(case["decisions"]):
            if d["winner"]:
                colour = family_colour(families, d["winner"])
                shown = f'<b style="color:{colour}">{_e(d["winner"])}</b>'
            else:
                shown = _e(d["outcome"].replace("-", " "))
            means = " · ".join(f"{_e(f)} {_num(q['mean'][i])}" for f, q in case["quality"].items())
            cells.append(
                f'<td title="{_e(d["sentence"])}">{shown}<br><span class="spread">{means}'
                "</span></td>"
            )
        rows.append(
            f'<tr><td>{_e(case["label"])} <span class="spread">({_e(case["primary"])})</span>'
            f"</td>{''.join(cells)}</tr>"
        )
    return (
        '<section id="sweep"><h2>Budget sweep: where one family overtakes the other</h2>'
        f'<ul class="facts">{facts}</ul>'
        f"<table><thead><tr><th>use case (primary metric)</th>{head}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
        + page.plot(
            plots.budget_sweep(report),
            "each use case's primary metric on the test split against samples seen, training "
            "FLOPs and wall-clock (every stage): mean over seeds, bars the 95% interval",
        )
        + '<p class="note">Every budget trains each family and seed from scratch with a '
        "learning-rate schedule of its own, and is decided as the verdict above is: by the "
        "primary metric's paired interval (hover a cell for its sentence). A crossover is the "
        "smallest budget from which one family is decided better at every larger budget, where "
        "below it the other family led or neither did. The verdict, table, curves and pictures "
        f"of this page are those of the largest budget, {_e(sweep['labels'][-1])}.</p></section>"
    )


def _table(report: Mapping[str, Any]) -> str:
    families = report["families"]
    head = "".join(f"<th>{_e(f)}</th>" for f in families)
    body, group = [], None
    for row in report["table"]:
        if row.get("group") != group:
            group = row.get("group")
            body.append(
                f'<tr class="group"><td colspan="{len(families) + 2}">{_e(group)}</td></tr>'
            )
        vals = {f: row["values"].get(f) for f in families}
        means = {f: v["mean"] for f, v in vals.items() if v}
        best = None
        if row.get("better") and len(means) > 1:
            best = (max if row["better"] == "higher" else min)(means, key=means.__getitem__)
        cells = []
        for f in families:
            v = vals[f]
            if not v:
                cells.append("<td>–</td>")
                continue
            if v.get("interval95"):
                low, high = v["interval95"]
                spread = f' <span class="spread">[{_num(low)}, {_num(high)}]</span>'
            elif v.get("seeds", 1) > 1:
                spread = f' <span class="spread">± {_num(v["std"])}</span>'
            else:
                spread = ""
            z = (
                f' <span class="spread">z≥{v["zMin"]:.0f}</span>'
                if v.get("zMin") is not None
                else ""
            )
            title = ", ".join(_num(x) for x in v.get("perSeed", []))
            digits = 0 if row["key"].endswith("Parameters") else 3
            cls = ' class="best"' if f == best else ""
            cells.append(
                f'<td{cls} title="per seed: {_e(title)}">{_num(v["mean"], digits)}{spread}{z}</td>'
            )
        unit = f' <span class="spread">({_e(row["unit"])})</span>' if row.get("unit") else ""
        chance = _num(row.get("chance")) if row.get("chance") is not None else ""
        body.append(f"<tr><td>{_e(row['label'])}{unit}</td>{''.join(cells)}<td>{chance}</td></tr>")
    seeds = ", ".join(f"{f}: {len(s)}" for f, s in report["seeds"].items())
    return (
        '<section id="table"><h2>Side by side</h2>'
        f"<table><thead><tr><th>measure</th>{head}<th>chance</th></tr></thead><tbody>{''.join(body)}</tbody></table>"
        f'<p class="note">Mean ± std over seeds ({_e(seeds)}); z: standard errors above chance at '
        "the worst seed; bold: the better mean. Latencies and training time are wall-clock on the "
        "machine that ran the job; hover a cell for the per-seed values.</p></section>"
    )


def _checkpoints(report: Mapping[str, Any]) -> str:
    tables = []
    for entry in report.get("checkpoints") or []:
        labels, tested = entry["labels"], list(entry["last"]["test"])
        head = "".join(f"<th>test: {_e(labels[n])}</th>" for n in tested)
        rows = "".join(
            f"<tr><td>{name}</td>"
            f"<td>{_e(', '.join(f'{n:,}' for n in entry[key]['samples']))}</td>"
            f"<td>{_num(entry[key]['validation'])}</td>"
            + "".join(f"<td>{_num(entry[key]['test'][n])}</td>" for n in tested)
            + "</tr>"
            for key, name in (("last", "last"), ("best", "best on validation"))
        )
        tables.append(
            f"<h3>{_e(entry['family'])}</h3><table><thead><tr><th>checkpoint</th>"
            f"<th>samples seen (per seed)</th><th>validation: {_e(labels[entry['metric']])}</th>"
            f"{head}</tr></thead><tbody>{rows}</tbody></table>"
        )
    if not tables:
        return ""
    return (
        '<section id="checkpoints"><h2>Last vs best-on-validation checkpoint</h2>'
        + "".join(tables)
        + '<p class="note">The best checkpoint is the state at the learning curve\'s point with '
        "the highest validation value of the metric named (true caption among 10 where it is "
        "measured). Both are scored on the test split, means over seeds. Reported only: the "
        "table above and the verdict read the last checkpoint.</p></section>"
    )


def _cost(report: Mapping[str, Any]) -> str:
    cost = report["cost"]
    nodes = "".join(
        f"<tr><td>{_e(n['name'])}</td><td>{_e(n['device'])}</td><td>{_money(n['usd_per_hour'])}</td>"
        f"<td>{_num(n['capacity']) if n['capacity'] is not None else 'not measured'}</td><td>{_e(n['source'])}</td></tr>"
        for n in cost["nodes"]
    )
    priced = {n["name"] for n in cost["nodes"] if n["capacity"] is not None}
    unpriced = [n["name"] for n in cost["nodes"] if n["capacity"] is None]
    training = [r for r in cost["training"] if r["node"] in priced]
    serving = [r for r in cost["serving"] if r["node"] in priced]
    train_scales = [s["samples"] for s in training[0]["scales"]] if training else []
    train = "".join(
        f"<tr><td>{_e(r['family'])}</td><td>{_e(r['node'])}</td>"
        + "".join(f"<td>{_hours(s['nodeHours'])} h · {_money(s['usd'])}</td>" for s in r["scales"])
        + "</tr>"
        for r in training
    )
    serve_scales = [s["requestsPerDay"] for s in serving[0]["scales"]] if serving else []
    serve = "".join(
        f"<tr><td>{_e(r['family'])}</td><td>{_e(r['request'])}</td><td>{_e(r['node'])}</td>"
        f"<td>{_num(r['msPerRequest'], 1)}</td><td>{_money(r['usdPerMillion'])}</td>"
        + "".join(
            f"<td>{'–' if s['nodes'] is None else s['nodes']} · {_money(s['usdPerDay'])}</td>"
            for s in r["scales"]
        )
        + "</tr>"
        for r in serving
    )
    missing = (
        f'<p class="note">Not priced: {_e(", ".join(unpriced))}: this job was measured on '
        f"{_e(cost['measuredOn'].get('device'))}; give such a node a relativeThroughput, or run "
        "the comparison on one.</p>"
        if unpriced
        else ""
    )
    m = cost["measuredOn"]
    measured = ", ".join(f"{k} {v}" for k, v in m.items() if v not in (None, ""))
    assumptions = "".join(f"<li>{_e(a)}</li>" for a in cost["assumptions"])
    return (
        '<section id="cost"><h2>Cost at scale</h2>'
        f"<p>Measured on: <code>{_e(measured)}</code>. Node prices are inputs "
        "(<code>vlarena report --node-prices FILE</code> replaces them):</p>"
        f"<table><thead><tr><th>node</th><th>device</th><th>price / hour</th><th>capacity vs measured</th><th>source</th></tr></thead><tbody>{nodes}</tbody></table>"
        "<h3>Training: node-hours and cost for a number of samples seen</h3>"
        "<table><thead><tr><th>family</th><th>node</th>"
        + "".join(f"<th>{_scale(s)} samples</th>" for s in train_scales)
        + f"</tr></thead><tbody>{train}</tbody></table>"
        "<h3>Serving: cost per million requests, and nodes · money per day at a request rate</h3>"
        "<table><thead><tr><th>family</th><th>request</th><th>node</th><th>ms/request</th><th>per 1M requests</th>"
        + "".join(f"<th>{_scale(s)}/day</th>" for s in serve_scales)
        + f"</tr></thead><tbody>{serve}</tbody></table>"
        + missing
        + f'<ul class="note">{assumptions}</ul></section>'
    )


def _selective(report: Mapping[str, Any], page: Page) -> str:
    sel = (report.get("probes") or {}).get("selectiveDecoding")
    if not sel:
        return ""
    if "headline" not in sel:
        return (
            '<section id="selective"><h2>Selective decoding</h2><p class="note">Measured on the '
            "earlier stream benchmark, whose ratio is not comparable with the paper's; "
            "<code>vlarena report</code> measures it again.</p></section>"
        )

    def fmt(v: float | None) -> str:
        return "not reached" if v is None else f"{v:.2f}×"

    def decodes(v: float | None) -> str:
        return "not reached" if v is None else f"{v:.1f}"

    spec, head = sel["spec"], sel["headline"]
    beats = {
        True: "selective decoding beats it",
        False: "selective decoding does <strong>not</strong> beat it",
        None: "no comparison: neither curve reaches every uniform rate's CIDEr",
    }[head["selectiveBeatsRawFeature"]]
    rates = "".join(
        f"<tr><td>1/{s['every']}</td><td>{s['cider']:.3f}</td><td>{s['uniformDecodes']:.0f}</td>"
        f"<td>{decodes(s['decodes'])}</td><td>{fmt(s['ratio'])}</td>"
        f"<td>{decodes(r['decodes'])}</td><td>{fmt(r['ratio'])}</td></tr>"
        for s, r in zip(head["selective"]["rates"], head["rawFeature"]["rates"], strict=True)
    )
    warning = (
        f"<p><strong>The decoder is not above chance here</strong> (CIDEr of decoding every "
        f"frame {sel['everyFrameCider']:.3f}, other segments' captions {sel['chanceCider']:.3f}): "
        "decoding fewer frames cannot lose what it never had, so the ratio says nothing about "
        "selective decoding. Train longer or on more data.</p>"
        if sel.get("chanceCider") is not None and sel["everyFrameCider"] <= sel["chanceCider"]
        else ""
    )
    return (
        '<section id="selective"><h2>Selective decoding</h2>'
        + (
            f'<p><span class="stat">{fmt(head["selective"]["ratio"])}</span> fewer decoding '
            "operations than uniform decoding at equal CIDEr (geometric mean over uniform rates "
            "1/2 to 1/16)"
            if head["selective"]["ratio"] is not None
            else '<p><span class="stat">no headline</span>: selective decoding does not reach '
            "the CIDEr of every uniform rate from 1/2 to 1/16 (table below)"
        )
        + f"; paper: {head['paper']:.2f}×. Segmenting the X-encoder's raw features by the "
        f"same clustering: {fmt(head['rawFeature']['ratio'])}; {beats}. Against decoding every "
        f"frame, at its CIDEr: {fmt(sel['ratioVsEveryFrame'])} fewer.</p>"
        + warning
        + "<table><thead><tr><th>uniform rate</th><th>its CIDEr</th><th>uniform decodes</th>"
        "<th>selective decodes</th><th>ratio</th><th>raw-feature decodes</th><th>ratio</th>"
        f"</tr></thead><tbody>{rates}</tbody></table>"
        + page.plot(plots.selective_decoding(sel), "CIDEr against text decodes per stream")
        + page.image(
            report["figures"].get("selective_decoding"),
            "selective decoding curve and an example stream",
            "",
        )
        + f'<p class="note">{_e(sel["family"])}: {sel["streams"]} streams of {spec["frames"]} '
        f"frames of {_e(sel['dataset'])} test images (seed {sel['seed']}), segments of "
        f"{spec['min_segment']}–{spec['max_segment']} frames ({sel['trueSegmentsPerStream']:.1f} "
        f"per stream), each one image shifted by up to {spec['max_shift']} px with Gaussian noise "
        f"(σ {spec['noise']}) per frame, a linear cross-fade of {spec['fade']} frames between "
        f"segments and one pause of {spec['pause']} identical frames per stream. Every frame is "
        "embedded; temporally constrained Ward clustering cuts the stream, of predicted "
        "embeddings (selective) or of mean-pooled X-encoder features (raw feature); the "
        f"Y-decoder decodes each segment's {_e(sel['representation'])} predicted embedding once. "
        f"Uniform decoding decodes the {_e(sel['representation'])} of fixed windows. CIDEr is "
        "scored per frame against its segment's captions; the middle frame of a cross-fade "
        "starts the next segment."
        + (
            f" With {sel['streams']} streams the curves' top points lie within sampling noise "
            "of each other; the benchmark's definition asks for 64."
            if sel["streams"] < 64
            else ""
        )
        + "</p></section>"
    )


def _pictures(report: Mapping[str, Any], page: Page) -> str:
    probes = report.get("probes") or {}
    figs = report["figures"]
    parts = []
    ca = probes.get("crossAttention")
    if ca:
        align = ca.get("alignment")
        note = (
            f" The class words of each caption part put {align['massOnNamedCell']:.0%} of their "
            f"attention on the cell the part names (uniform: {align['chance']:.0%}; {align['n']} parts)."
            if align
            else ""
        )
        parts.append(
            f"<h3>Token VLM: cross-attention per generated token ({_e(ca['family'])})</h3>"
            + page.image(figs.get("cross_attention"), "cross-attention heatmaps")
            + page.plot(
                plots.cross_attention(ca),
                "cross-attention of each generated token over the visual tokens",
            )
            + f'<p class="note">Averaged over heads and layers.{_e(note)}</p>'
        )
    pa = probes.get("predictorAttention")
    if pa:
        align = pa.get("alignment")
        note = (
            f" Over {align['n']} questions, the last layer puts {align['massOnAskedCell']:.0%} of "
            f"the question's attention on the asked cell (uniform: {align['chance']:.0%})."
            if align
            else ""
        )
        parts.append(
            f"<h3>VL-JEPA: predictor attention to the visual tokens ({_e(pa['family'])})</h3>"
            + page.image(figs.get("predictor_attention"), "predictor attention maps")
            + f'<p class="note">Attention from the question tokens to the 16 visual tokens, mean over heads.{_e(note)}</p>'
        )
    em = probes.get("embeddingMap")
    if em:
        parts.append(
            f"<h3>Embedding maps ({_e(em['family'])}): predicted vs target</h3>"
            + page.plot(
                plots.embedding_maps(em),
                f"coloured by {em['colouredBy']}; circles: predicted from the image, crosses: target from the caption",
            )
            + page.image(figs.get("embedding_maps"), "PCA and t-SNE of embeddings")
        )
    zc = probes.get("zeroshotConfusion")
    if zc:
        parts.append(
            "<h3>Zero-shot confusion</h3>"
            + page.plot(plots.zeroshot_confusion(zc), "rows: true class, columns: predicted class")
            + page.image(figs.get("zeroshot_confusion"), "zero-shot confusion matrices")
        )
    if not parts:
        return ""
    return '<section id="pictures"><h2>Inside the models</h2>' + "".join(parts) + "</section>"


def _samples(report: Mapping[str, Any]) -> str:
    rows = []
    for fam, samples in report.get("samples", {}).items():
        for s in samples:
            refs = " | ".join(s.get("references", []))
            rows.append(
                f"<tr><td>{_e(fam)}</td><td>{_e(s.get('id', ''))}</td><td>{_e(s.get('generated', ''))}</td><td>{_e(refs)}</td></tr>"
            )
    if not rows:
        return ""
    return (
        '<section id="samples"><h2>Generated captions</h2><table class="samples"><thead><tr>'
        "<th>family</th><th>image</th><th>generated</th><th>reference</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></section>"
    )


def _artifacts(paths: Sequence[str], link: Link) -> str:
    lis = "".join(f'<li><a href="{_e(link(p))}">{_e(p)}</a></li>' for p in paths)
    return f'<section id="artifacts"><h2>Artifacts</h2><ul>{lis}</ul></section>'


def render_page(
    report_dir: Path,
    *,
    workdir: Path | None = None,
    link: Link | None = None,
    artifacts: Sequence[str] = (),
) -> str:
    """The HTML page of the report in `report_dir` (its report.json and figures/).

    Artifacts are named by their path in the job's `workdir` (default: the report directory's
    parent): "metrics.json", "report/figures/quality.png". `link` turns such a path into a URL
    (the gateway passes one that signs artifact URLs); by default, a path relative to the
    report directory, for the page opened from disk. `artifacts` adds more paths to link.
    """
    report_dir = Path(report_dir).resolve()
    workdir = Path(workdir).resolve() if workdir else report_dir.parent
    if link is None:

        def link(path: str) -> str:
            return Path(os.path.relpath(workdir / path, report_dir)).as_posix()

    report = json.loads((report_dir / REPORT_FILE).read_text())
    page = Page(report_dir)
    here = Path(os.path.relpath(report_dir, workdir)).as_posix()

    def in_report(path: str) -> str:
        return path if here == "." else f"{here}/{path}"

    listed = [in_report(REPORT_FILE), in_report(PAGE_FILE), METRICS_FILE]
    listed += [in_report(p) for p in report["figures"].values()] + list(artifacts)
    budget = ", ".join(
        f"{k} {_num(v, 0) if isinstance(v, int | float) else v}"
        for k, v in report["budget"].items()
    )
    if report.get("sweep"):
        budget += f" (the largest of a sweep over {', '.join(report['sweep']['labels'])})"
    seeds = max((len(s) for s in report["seeds"].values()), default=0)
    curves = (
        '<section id="curves"><h2>Learning curves</h2>'
        + page.plot(
            plots.learning_curves(report),
            "quality on the validation split against samples seen: mean over seeds, band ±1 std, dashed: chance",
        )
        + page.plot(
            plots.training_loss(report),
            "training loss: each family's own objective (cross-entropy for token prediction, InfoNCE for VL-JEPA), so compare shapes, not values",
        )
        + "</section>"
    )
    quality = (
        '<section id="quality"><h2>Final quality</h2>'
        + page.plot(
            plots.quality_bars(report), "test split, mean ± std over seeds; black ticks: chance"
        )
        + "</section>"
    )
    nav = "".join(
        f'<a href="#{a}">{t}</a>'
        for a, t in (
            ("verdict", "Verdict"),
            *((("sweep", "Budget sweep"),) if report.get("sweep") else ()),
            ("priors", "Priors"),
            ("table", "Table"),
            ("curves", "Learning curves"),
            ("checkpoints", "Checkpoints"),
            ("quality", "Quality"),
            ("cost", "Cost"),
            ("selective", "Selective decoding"),
            ("pictures", "Inside the models"),
            ("figures", "Figures"),
            ("artifacts", "Artifacts"),
        )
    )
    sections = (
        _verdict(report)
        + _sweep(report, page)
        + _priors(report)
        + _table(report)
        + curves
        + _checkpoints(report)
        + quality
        + _cost(report)
        + _selective(report, page)
        + _pictures(report, page)
        + _samples(report)
    )
    # The charts' static versions, and any figure no section showed; each links to its file.
    gallery = "".join(
        f'<a href="{_e(link(in_report(p)))}">'
        f"{page.image(p, name.replace('_', ' '), name.replace('_', ' '))}</a>"
        for name, p in report["figures"].items()
        if p not in page.shown
    )
    body = (
        f"<header><h1>{_e(report['title'])}</h1>"
        f"<p>{seeds} seed{'s' if seeds != 1 else ''} per family · budget {_e(budget)} · dataset "
        f"{_e(report['dataset'].get('name'))} · report {_e(report['createdAt'])}</p></header>"
        f"<nav>{nav}</nav><main>"
        '<noscript><p class="note">The interactive plots need JavaScript; their static versions '
        "are under Figures.</p></noscript>"
        + sections
        + '<section id="figures"><h2>Figures</h2><p class="note">Static versions of the charts '
        "above (PNG); every figure is also listed under Artifacts.</p>"
        + f'<div class="gallery">{gallery}</div></section>'
        + _artifacts(listed, link)
        + "</main>"
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(report['title'])} · vlarena report</title>"
        '<link rel="icon" href="data:,">'
        f"<style>{CSS}</style>"
        f"<script>{plotly_js()}</script>"
        f"</head><body>{body}{page.scripts()}</body></html>"
    )


def write_page(report_dir: Path, workdir: Path, artifacts: Sequence[str] = ()) -> Path:
    """Writes report.html beside report.json, with links relative to the report directory."""
    path = Path(report_dir) / PAGE_FILE
    atomic_write_text(path, render_page(report_dir, workdir=workdir, artifacts=artifacts))
    return path


def render_index(entries: Sequence[Mapping[str, Any]]) -> str:
    """A /reports index page: one row per report, from `report_summary` dicts with a `url`."""
    rows = "".join(
        f'<tr><td><a href="{_e(e["url"])}">{_e(e.get("jobId") or e["title"])}</a></td>'
        f"<td>{_e(e['title'])}</td><td>{_e(e.get('createdAt', ''))}</td>"
        f"<td>{_e(' '.join(e.get('verdict', [])[:2]))}</td></tr>"
        for e in entries
    )
    empty = "" if entries else '<p class="note">No comparison reports yet.</p>'
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>vlarena reports</title>'
        f'<link rel="icon" href="data:,"><style>{CSS}</style></head><body>'
        "<header><h1>Comparison reports</h1><p>One per compare job.</p></header><main><section>"
        f"<table><thead><tr><th>job</th><th>comparison</th><th>created</th><th>verdict</th></tr></thead><tbody>{rows}</tbody></table>{empty}"
        "</section></main></body></html>"
    )


def report_summary(report_dir: Path) -> dict[str, Any] | None:
    """Title, date and verdict of the report in `report_dir` (None when there is none)."""
    path = Path(report_dir) / REPORT_FILE
    if not path.is_file():
        return None
    report = json.loads(path.read_text())
    return {
        "title": report["title"],
        "createdAt": report["createdAt"],
        "families": report["families"],
        "verdict": report["verdict"]["summary"],
    }
