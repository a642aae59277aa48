"""The report a compare job writes: report.json, figures and the page; the CLI commands."""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlarena.errors import UserInputError
from vlarena.evaluation.report.page import render_index, render_page, report_summary
from vlarena.evaluation.report.report import ReportConfig
from vlarena.experiments.cli import register
from vlarena.experiments.configs import report_config
from vlarena.experiments.reports import write_report
from vlarena.jobs.spec import Evaluation, ReportOptions
from vlarena.rundirs import JobDir

FIGURES = {
    "learning_curves",
    "training_loss",
    "quality",
    "selective_decoding",
    "cross_attention",
    "predictor_attention",
    "embedding_maps",
    "zeroshot_confusion",
}


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="vlarena")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def assert_drawn(path: Path) -> None:
    pixels = np.asarray(Image.open(path).convert("L"), dtype=float)
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert pixels.std() > 5, f"{path.name} is blank"


def test_a_compare_job_writes_its_report(tiny_compare):
    workdir = tiny_compare["workdir"]
    artifacts = tiny_compare["result"]["artifacts"]
    assert {"report/report.json", "report/report.html"} <= set(artifacts)
    report = json.loads((workdir / "report" / "report.json").read_text())
    assert report["schema"] == "vlarena.report/v1"
    assert set(report["figures"]) == FIGURES
    for relative in report["figures"].values():
        assert f"report/{relative}" in artifacts
        assert_drawn(workdir / "report" / relative)
    probes = report["probes"]
    assert probes["crossAttention"]["family"] == "token-vlm"
    assert probes["predictorAttention"]["family"] == "vl-jepa"
    assert probes["embeddingMap"]["family"] == "vl-jepa"
    assert probes["selectiveDecoding"]["family"] == "vl-jepa"
    assert set(probes["zeroshotConfusion"]) == {"token-vlm", "vl-jepa"}
    for family in ("token-vlm", "vl-jepa"):
        confusion = np.array(probes["zeroshotConfusion"][family]["counts"])
        assert (
            confusion.shape == (10, 10)
            and confusion.sum() == probes["zeroshotConfusion"][family]["n"]
        )
        assert {"caption", "classify"} <= set(probes["latency"][family])
    # attention maps are distributions over the 16 visual tokens
    weights = np.array(probes["crossAttention"]["examples"][0]["weights"])
    assert weights.shape[1] == 16
    np.testing.assert_allclose(weights.sum(1), 1, atol=1e-3)
    layers = np.array(probes["predictorAttention"]["examples"][0]["queries"][0]["layers"])
    np.testing.assert_allclose(layers.sum(-1), 1, atol=1e-3)
    em = probes["embeddingMap"]
    assert len(em["pca"]) == len(em["tsne"]) == 2 * em["points"]
    keys = {r["key"] for r in report["table"]}
    assert {"classifyMs", "decodeSteps", "classifyDecoderPasses", "decodesPerFrame"} <= keys


def test_report_of_three_seeds_shows_their_spread(three_seed_workdir, tmp_path):
    out = tmp_path / "report"
    written = write_report(JobDir(three_seed_workdir), out, cfg=ReportConfig(probes=False))
    assert str(out / "report.html") in written  # outside the job's directory: full paths
    report = json.loads((out / "report.json").read_text())
    curve = report["curves"]["caption_of_10"]["families"]["vl-jepa"]
    assert len(curve["seeds"]) == 3 and max(curve["std"]) > 0
    row = next(r for r in report["table"] if r["key"] == "caption_of_10")
    assert row["values"]["token-vlm"]["seeds"] == 3 and row["chance"] == 0.1
    assert {"learning_curves", "training_loss", "quality"} == set(report["figures"])
    for relative in report["figures"].values():
        assert_drawn(out / relative)
    assert report["verdict"]["summary"] and report["cost"]["training"]


def test_page_is_self_contained(tiny_compare):
    html = (tiny_compare["workdir"] / "report" / "report.html").read_text()
    markup = re.sub(r"<script[^>]*>.*?</script>", "", html, flags=re.S)  # Plotly's code aside
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", markup), (
        "the page must load nothing from elsewhere"
    )
    assert "Plotly.newPlot" in html and "plotly.js v" in html.lower()
    assert html.count('class="plot"') == html.count('type="application/json"') >= 6
    assert markup.count('src="data:image/png;base64,') == len(FIGURES)  # each figure once
    for section in ("verdict", "table", "curves", "cost", "selective", "pictures", "artifacts"):
        assert f'id="{section}"' in html
    assert re.search(r"<script>[^<]*Plotly", html) and "<script src" not in html
    assert 'href="../metrics.json"' in markup and 'href="figures/quality.png"' in markup
    # the tiny run's few streams: the page says its ratio is within noise
    assert "within sampling noise" in markup
    # the headline beside the paper's, and the raw-feature baseline it is compared with
    assert "paper: 2.85×" in markup and "raw features by the same clustering" in markup


def test_page_of_a_report_measured_before_the_headline_ratio(tiny_compare, tmp_path):
    report_dir = tmp_path / "report"
    shutil.copytree(tiny_compare["workdir"] / "report", report_dir)
    report = json.loads((report_dir / "report.json").read_text())
    del report["probes"]["selectiveDecoding"]["headline"]
    (report_dir / "report.json").write_text(json.dumps(report))
    html = render_page(report_dir)
    assert 'id="selective"' in html and "earlier stream benchmark" in html


def test_page_links_artifacts_through_the_gateway_link(tiny_compare):
    workdir = tiny_compare["workdir"]
    html = render_page(
        workdir / "report", link=lambda p: f"/v1/jobs/job-0123456789a/artifacts/{p}?sig=s"
    )
    assert 'href="/v1/jobs/job-0123456789a/artifacts/metrics.json?sig=s"' in html
    assert 'href="/v1/jobs/job-0123456789a/artifacts/report/figures/quality.png?sig=s"' in html
    summary = report_summary(workdir / "report")
    index = render_index(
        [{**summary, "jobId": "job-0123456789a", "url": "/v1/jobs/job-0123456789a/report?sig=s"}]
    )
    assert "job-0123456789a" in index and summary["title"] in index
    assert report_summary(workdir / "nowhere") is None


def test_report_options_of_a_job_spec():
    options = ReportOptions.model_validate(
        {"probes": False, "probeImages": 10, "selectiveStreams": 0}
    )
    cfg = report_config(options)
    assert not cfg.probes and cfg.probe_images == 10 and cfg.selective is None
    node = {"name": "n", "device": "cpu", "usdPerHour": 1.0, "vcpus": 4}
    cfg = report_config(ReportOptions.model_validate({"nodes": [node]}))
    assert cfg.nodes[0].vcpus == 4
    small = report_config(None, Evaluation(max_images=64))  # a smoke test's report stays small
    assert small.probe_images == 64 and small.selective.streams == 2
    assert report_config(None, Evaluation()).selective.streams == 64


def test_cli_writes_a_report_and_runs_the_benchmark(three_seed_workdir, tmp_path, capsys):
    assert (
        run_cli(["report", str(three_seed_workdir), "--out", str(tmp_path / "r"), "--no-probes"])
        == 0
    )
    printed = capsys.readouterr().out
    assert "report: " in printed and printed.startswith("- For ")
    assert (
        run_cli(
            [
                "selective-decoding",
                str(three_seed_workdir),
                "--streams",
                "1",
                "--out",
                str(tmp_path / "s.json"),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "headline, geometric mean over 1/2 to 1/16" in printed
    assert json.loads((tmp_path / "s.json").read_text())["streams"] == 1
    with pytest.raises(UserInputError, match=r"no metrics\.json"):
        run_cli(["report", str(tmp_path)])
