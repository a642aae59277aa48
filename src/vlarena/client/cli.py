"""The platform's client commands: `jobs ...` and `models ...`.

`register(subparsers)` adds them to the `vlarena` command; every subcommand's `func` takes the
parsed arguments and returns an exit code. Client commands read `VLARENA_API_URL` and
`VLARENA_API_KEY` unless given `--api-url` / `--api-key`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Column, Table

from vlarena.client.api import GatewayClient, GatewayError, StreamEvent
from vlarena.settings import Settings, get_settings

EXIT_OK, EXIT_JOB_UNSUCCESSFUL, EXIT_ERROR = 0, 1, 2
JOB_STATES = ("QUEUED", "RUNNING", "RETRYING", "CANCELLING", "SUCCEEDED", "FAILED", "CANCELLED")
STATE_STYLES = {
    "QUEUED": "yellow",
    "RUNNING": "cyan",
    "RETRYING": "magenta",
    "CANCELLING": "magenta",
    "SUCCEEDED": "green",
    "FAILED": "red",
    "CANCELLED": "dim",
}
LEVEL_STYLES = {"debug": "dim", "warning": "yellow", "error": "bold red"}

Command = Callable[[argparse.Namespace], int]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds `jobs` and `models` to the `vlarena` command."""
    _register_jobs(subparsers)
    _register_models(subparsers)


# Client commands.


def _client_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--api-url", help="gateway URL (VLARENA_API_URL)")
    common.add_argument("--api-key", help="API key (VLARENA_API_KEY)")
    common.add_argument(
        "-o", "--output", choices=("table", "json"), default="table", help="output format"
    )
    return common


def _client(args: argparse.Namespace) -> GatewayClient:
    settings: Settings = get_settings()
    return GatewayClient(args.api_url or settings.api_url, args.api_key or settings.api_key)


def _calling_gateway(command: Command) -> Command:
    """Reports gateway and connection errors as one line and exit code 2."""

    def run(args: argparse.Namespace) -> int:
        import httpx

        try:
            return command(args)
        except GatewayError as exc:
            print(f"error: {exc.message} ({exc.status} {exc.code})", file=sys.stderr)
            for detail in exc.details if isinstance(exc.details, list) else []:
                print(f"  {detail.get('field')}: {detail.get('message')}", file=sys.stderr)
            return EXIT_ERROR
        except httpx.HTTPError as exc:
            print(f"error: cannot reach the gateway: {exc}", file=sys.stderr)
            return EXIT_ERROR

    return run


def _register_jobs(subparsers: argparse._SubParsersAction) -> None:
    common = _client_parser()
    jobs = subparsers.add_parser("jobs", help="submit, list, follow and cancel jobs")
    actions = jobs.add_subparsers(dest="jobs_action", metavar="ACTION", required=True)

    submit = actions.add_parser("submit", parents=[common], help="submit a job spec (YAML/JSON)")
    submit.add_argument("file", help="job spec file, or - for standard input")
    submit.add_argument("-f", "--follow", action="store_true", help="follow its logs to the end")
    submit.add_argument("--validate-only", action="store_true", help="check the spec only")
    submit.set_defaults(func=_calling_gateway(_submit))

    listing = actions.add_parser("list", parents=[common], help="list jobs, newest first")
    listing.add_argument("--state", action="append", choices=JOB_STATES, help="repeatable")
    listing.add_argument("--type", action="append", choices=("train", "evaluate", "compare"))
    listing.add_argument("--limit", type=int, default=20)
    listing.set_defaults(func=_calling_gateway(_list))

    get = actions.add_parser("get", parents=[common], help="show one job")
    get.add_argument("job_id")
    get.set_defaults(func=_calling_gateway(_get))

    logs = actions.add_parser("logs", parents=[common], help="print a job's logs")
    logs.add_argument("job_id")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing until it ends")
    logs.set_defaults(func=_calling_gateway(_logs))

    cancel = actions.add_parser("cancel", parents=[common], help="cancel a job")
    cancel.add_argument("job_id")
    cancel.set_defaults(func=_calling_gateway(_cancel))

    report = actions.add_parser(
        "report", parents=[common], help="a signed link to a compare job's report page"
    )
    report.add_argument("job_id")
    report.add_argument("--expires-in", type=int, metavar="SECONDS", help="link lifetime")
    report.add_argument("--open", action="store_true", help="open it in a browser")
    report.set_defaults(func=_calling_gateway(_report))


def _load_spec(file: str) -> dict[str, Any]:
    text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
    spec = yaml.safe_load(text)
    if not isinstance(spec, dict):
        raise GatewayError(0, "invalid_spec", f"{file}: a job spec is a mapping")
    return spec


def _submit(args: argparse.Namespace) -> int:
    spec = _load_spec(args.file)
    if args.validate_only:
        spec["validateOnly"] = True
    console = Console()
    with _client(args) as client:
        answer = client.submit_job(spec)
        if args.output == "json" and not args.follow:
            print(json.dumps(answer, indent=2))
            return EXIT_OK
        if args.validate_only:
            console.print(f"[green]valid[/]: would run in queue {answer['queue']}")
            return EXIT_OK
        console.print(f"[bold]{answer['id']}[/] {_state(answer['state'])} ({answer['type']})")
        if not args.follow:
            return EXIT_OK
        return _follow(client, console, answer["id"])


def _state(state: str) -> str:
    return f"[{STATE_STYLES.get(state, 'white')}]{state}[/]"


def _print_entry(console: Console, entry: dict[str, Any]) -> None:
    clock = datetime.fromisoformat(entry["time"]).strftime("%H:%M:%S")
    style = LEVEL_STYLES.get(entry["level"], "")
    if entry.get("source") == "platform" and not style:
        style = "cyan"
    message = entry["message"].replace("[", r"\[")
    console.print(f"[dim]{clock}[/] " + (f"[{style}]{message}[/]" if style else message))


def _follow(client: GatewayClient, console: Console, job_id: str) -> int:
    end: StreamEvent | None = None
    for event in client.follow(job_id):
        if event.event == "end":
            end = event
        else:
            _print_entry(console, event.data)
    job = client.get_job(job_id)
    _print_outcome(console, job)
    state = end.data.get("state") if end else job["state"]
    return EXIT_OK if state == "SUCCEEDED" else EXIT_JOB_UNSUCCESSFUL


def _print_outcome(console: Console, job: dict[str, Any]) -> None:
    console.print(f"\n[bold]{job['id']}[/] {_state(job['state'])}")
    if job.get("error"):
        console.print(f"[red]{job['error']['code']}: {job['error']['message']}[/]")
    values = (job.get("metrics") or {}).get("values") or {}
    if values and job["state"] == "SUCCEEDED":
        table = Table("metric", "value", title="final metrics", title_justify="left")
        for name, value in values.items():
            table.add_row(name, f"{value:.4g}" if isinstance(value, float) else str(value))
        console.print(table)
    for model in job.get("models") or []:
        console.print(f"registered model [bold]{model['name']}[/] version {model['version']}")
    if job.get("workdir"):
        console.print(f"artifacts: {job['workdir']}")


def _list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        page = client.list_jobs(states=args.state, types=args.type, limit=args.limit)
    if args.output == "json":
        print(json.dumps(page, indent=2))
        return EXIT_OK
    table = Table(
        Column("ID", no_wrap=True), "TYPE", "STATE", "PROGRESS", "PRIORITY", "OWNER", "CREATED"
    )
    for job in page["items"]:
        progress = job.get("progress") or {}
        percent = progress.get("percent")
        eta = progress.get("etaSeconds")
        shown = f"{percent:.0f}%" if percent is not None else ""
        if eta and job["state"] == "RUNNING":
            shown += f" (ETA {eta:.0f} s)"
        table.add_row(
            job["id"],
            job["type"],
            _state(job["state"]),
            shown,
            str(job["priority"]),
            job["owner"],
            job["createdAt"][:19].replace("T", " "),
        )
    Console().print(table)
    return EXIT_OK


def _get(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = client.get_job(args.job_id)
    if args.output == "json":
        print(json.dumps(job, indent=2))
        return EXIT_OK
    console = Console()
    console.print(f"[bold]{job['id']}[/] {job['type']} {_state(job['state'])}")
    console.print(f"queue {job['queue']} · priority {job['priority']} · owner {job['owner']}")
    progress = job.get("progress")
    if progress:
        console.print(
            f"progress: {progress.get('samplesSeen')}/{progress.get('totalSamples')} samples "
            f"({progress.get('percent')}%), ETA {progress.get('etaSeconds')} s"
        )
    cluster = job.get("cluster")
    if cluster:
        pods = ", ".join(f"{n} {phase.lower()}" for phase, n in (cluster.get("pods") or {}).items())
        console.print(
            f"kubernetes: job {cluster.get('namespace')}/{cluster.get('name')} "
            f"{_state(cluster['state'])}" + (f" · pods: {pods}" if pods else "")
        )
        console.print(f"  {cluster.get('message', '')}".replace("[", r"\["))
    attempts = Table("#", "WORKER", "OUTCOME", "FROM SAMPLES", "TO SAMPLES", "ERROR")
    for attempt in job.get("attempts", []):
        attempts.add_row(
            str(attempt["number"]),
            attempt["worker"],
            attempt["outcome"],
            str(attempt.get("resumedFromSamples")),
            str(attempt.get("samplesSeen") or ""),
            attempt.get("error") or "",
        )
    if job.get("attempts"):
        console.print(attempts)
    _print_outcome(console, job)
    return EXIT_OK


def _logs(args: argparse.Namespace) -> int:
    console = Console()
    with _client(args) as client:
        if args.follow:
            return _follow(client, console, args.job_id)
        after = None
        while True:
            page = client.logs(args.job_id, after=after)
            for entry in page["items"]:
                _print_entry(console, entry)
            after = page.get("nextAfter")
            if not after:
                return EXIT_OK


def _cancel(args: argparse.Namespace) -> int:
    with _client(args) as client:
        answer = client.cancel_job(args.job_id)
    if args.output == "json":
        print(json.dumps(answer))
    else:
        Console().print(f"{answer['id']} {_state(answer['state'])}")
    return EXIT_OK


def _report(args: argparse.Namespace) -> int:
    with _client(args) as client:
        answer = client.report_link(args.job_id, expires_in=args.expires_in)
    if args.output == "json":
        print(json.dumps(answer))
    else:
        print(answer["url"])
        print(f"valid until {answer['expiresAt']}", file=sys.stderr)
    if args.open:
        import webbrowser

        webbrowser.open(answer["url"])
    return EXIT_OK


def _register_models(subparsers: argparse._SubParsersAction) -> None:
    common = _client_parser()
    models = subparsers.add_parser("models", help="the model registry: models, versions, aliases")
    actions = models.add_subparsers(dest="models_action", metavar="ACTION", required=True)

    listing = actions.add_parser("list", parents=[common], help="list registered models")
    listing.set_defaults(func=_calling_gateway(_models_list))

    versions = actions.add_parser("versions", parents=[common], help="list a model's versions")
    versions.add_argument("name")
    versions.set_defaults(func=_calling_gateway(_models_versions))

    alias = actions.add_parser(
        "alias", parents=[common], help="point an alias (production, candidate, ...) at a version"
    )
    alias.add_argument("name")
    alias.add_argument("alias")
    alias.add_argument("version", type=int, nargs="?", help="omit with --remove")
    alias.add_argument("--remove", action="store_true", help="remove the alias")
    alias.set_defaults(func=_calling_gateway(_models_alias))


def _models_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        page = client.list_models(limit=200)
    if args.output == "json":
        print(json.dumps(page, indent=2))
        return EXIT_OK
    table = Table("NAME", "FAMILY", "LATEST", "ALIASES", "UPDATED")
    for model in page["items"]:
        aliases = ", ".join(f"{a}→v{v}" for a, v in model["aliases"].items())
        table.add_row(
            model["name"],
            model["family"],
            str(model["latestVersion"]),
            aliases,
            model["updatedAt"][:19].replace("T", " "),
        )
    Console().print(table)
    return EXIT_OK


def _models_versions(args: argparse.Namespace) -> int:
    with _client(args) as client:
        page = client.versions(args.name)
    if args.output == "json":
        print(json.dumps(page, indent=2))
        return EXIT_OK
    table = Table("VERSION", "STATUS", "SOURCE JOB", "ALIASES", "METRICS")
    for version in page["items"]:
        shown = ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in list(version["metrics"].items())[:4]
        )
        table.add_row(
            str(version["version"]),
            version["status"],
            version["sourceJob"],
            ", ".join(version["aliases"]),
            shown,
        )
    Console().print(table)
    return EXIT_OK


def _models_alias(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.remove:
            client.remove_alias(args.name, args.alias)
            print(f"removed alias {args.alias} of {args.name}")
            return EXIT_OK
        if args.version is None:
            print("error: give a version, or --remove", file=sys.stderr)
            return EXIT_ERROR
        model = client.set_alias(args.name, args.alias, args.version)
    if args.output == "json":
        print(json.dumps(model, indent=2))
    else:
        print(f"{args.name}: {args.alias} → version {model['aliases'][args.alias]}")
    return EXIT_OK
