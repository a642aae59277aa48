"""The `vlarena` command: each component registers its own subcommands (experiments, data,
serving, the platform's servers and client, the demo)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from vlarena.errors import UserInputError


def cmd_data_export(args: argparse.Namespace) -> int:
    from vlarena.data.export import export_dataset
    from vlarena.experiments.cli import key_values

    manifest = export_dataset(args.name, args.dir, **key_values(args.option, "--option"))
    print(manifest)
    return 0


def _register_data(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="datasets").add_subparsers(
        dest="data_command", required=True
    )
    p = data.add_parser("export", help="write a built-in dataset as manifest.jsonl + images")
    p.add_argument("name")
    p.add_argument("dir", type=Path)
    p.add_argument(
        "--option",
        action="append",
        metavar="KEY=VALUE",
        help="e.g. n_train=1000, or split=test to write one split with every record marked",
    )
    p.set_defaults(func=cmd_data_export)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlarena", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    # Their modules import nothing heavy at the top, so `vlarena gateway` starts in the
    # torch-free gateway image.
    from vlarena.client.cli import register as register_platform
    from vlarena.demo import register as register_demo
    from vlarena.experiments.cli import register as register_experiments
    from vlarena.gateway.cli import register as register_gateway
    from vlarena.serving.cli import register as register_serving
    from vlarena.worker.cli import register as register_worker

    register_experiments(sub)
    _register_data(sub)
    register_gateway(sub)
    register_worker(sub)
    register_platform(sub)
    register_serving(sub)
    register_demo(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    except UserInputError as exc:
        # One line a person can act on; a traceback is for programming errors.
        print(f"vlarena: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
