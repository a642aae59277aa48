"""The report's commands: `vlarena report RUN_DIR` and `vlarena selective-decoding MODEL`."""

from __future__ import annotations

import argparse
import json
import sys
import webbrowser
from pathlib import Path
from typing import Any


def _print_event(event: dict[str, Any]) -> None:
    if event.get("type") == "log":
        print(event["message"], file=sys.stderr)


def cmd_report(args: argparse.Namespace) -> int:
    from vlarena.evaluation.report.page import PAGE_FILE
    from vlarena.evaluation.report.report import (
        ReportConfig,
        load_nodes,
        verdict_lines,
        write_report,
    )
    from vlarena.evaluation.report.selective import SelectiveConfig

    if not (args.run_dir / "metrics.json").is_file():
        raise FileNotFoundError(
            f"no metrics.json in {args.run_dir} (give a compare job's output directory)"
        )
    cfg = ReportConfig(
        probes=not args.no_probes,
        probe_images=args.probe_images,
        selective=SelectiveConfig(streams=args.streams) if args.streams > 0 else None,
    )
    if args.node_prices:
        cfg.nodes = load_nodes(args.node_prices)
    out = args.out or args.run_dir / "report"
    write_report(
        args.run_dir,
        out,
        cfg=cfg,
        on_event=_print_event if args.verbose_report else lambda _e: None,
    )
    for line in verdict_lines(out):
        print(f"- {line}")
    page = (out / PAGE_FILE).resolve()
    print(f"report: {page}")
    if args.open:
        webbrowser.open(page.as_uri())
    return 0


def _embedding_model_path(path: Path) -> Path:
    """A model file that predicts embeddings: the path itself, a run directory's model, or the
    first such family's model in a compare job's directory."""
    from vlarena.models.registry import load_model
    from vlarena.training.jobs import find_model

    metrics = path / "metrics.json"
    if path.is_dir() and metrics.is_file():
        doc = json.loads(metrics.read_text())
        for family, body in doc.get("families", {}).items():
            candidate = path / family / f"seed{body['seeds'][0]['seed']}" / "model.pt"
            if candidate.is_file() and hasattr(load_model(candidate), "decode_embeddings"):
                return candidate
        raise ValueError(f"{path}: no family of this comparison decodes embeddings")
    return find_model(path)


def cmd_selective(args: argparse.Namespace) -> int:
    from vlarena.evaluation.report.selective import SelectiveConfig, curve_lines, selective_decoding
    from vlarena.models.registry import load_model
    from vlarena.training.jobs import _set_threads

    _set_threads()
    model = load_model(_embedding_model_path(args.model))
    if not (hasattr(model, "predict_embedding") and hasattr(model, "decode_embeddings")):
        raise ValueError(
            f"{args.model}: selective decoding needs a model that predicts and decodes embeddings (vl-jepa)"
        )
    cfg = SelectiveConfig(streams=args.streams, seed=args.seed, representation=args.representation)
    result = selective_decoding(model, cfg)
    print("\n".join(curve_lines(result)))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"results: {args.out}")
    return 0


def register(subparsers: Any) -> None:
    """Adds `report` and `selective-decoding` to the `vlarena` command's subparsers."""
    p = subparsers.add_parser("report", help="write the comparison report of a compare job")
    p.add_argument(
        "run_dir", type=Path, help="a compare job's output directory (with metrics.json)"
    )
    p.add_argument("--out", type=Path, help="report directory (default RUN_DIR/report)")
    p.add_argument("--open", action="store_true", help="open the page in a browser")
    p.add_argument(
        "--no-probes", action="store_true", help="only what metrics.json holds: no model loading"
    )
    p.add_argument(
        "--probe-images", type=int, default=200, help="test images for maps and confusion"
    )
    p.add_argument("--streams", type=int, default=32, help="selective-decoding streams (0: skip)")
    p.add_argument(
        "--node-prices",
        type=Path,
        help="JSON list of nodes: name, device, usdPerHour, vcpus, gpus, source",
    )
    p.add_argument("--verbose-report", action="store_true", help="print progress")
    p.set_defaults(func=cmd_report)

    p = subparsers.add_parser(
        "selective-decoding",
        help="the selective-decoding stream benchmark: CIDEr against decoding operations",
    )
    p.add_argument(
        "model",
        type=Path,
        help="a VL-JEPA model.pt, its run directory, or a compare job's directory",
    )
    p.add_argument("--streams", type=int, default=64, help="streams (fewer: a noisier ratio)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--representation", choices=("mean", "midpoint"), default="mean")
    p.add_argument("--out", type=Path, help="write the curve and ratios as JSON")
    p.set_defaults(func=cmd_selective)
