"""`vlarena gateway` and `vlarena gateway new-key`: serving the API and making API keys."""

from __future__ import annotations

import argparse
import json
import sys

from vlarena.settings import get_settings

# The exit codes of every vlarena command: 2 is an error the user can act on.
EXIT_OK, EXIT_ERROR = 0, 2


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds `gateway` (and its `new-key` action) to the `vlarena` command."""
    gateway = subparsers.add_parser(
        "gateway",
        help="serve the REST API (FastAPI + uvicorn)",
        description="Serves the API. Configure it with VLARENA_* variables: VLARENA_REDIS_URL, "
        "VLARENA_API_KEYS or VLARENA_API_KEYS_FILE, VLARENA_ARTIFACT_DIR, "
        "VLARENA_GATEWAY_WORKERS, ...",
    )
    gateway.add_argument("--host", help="bind address (VLARENA_GATEWAY_HOST)")
    gateway.add_argument("--port", type=int, help="port (VLARENA_GATEWAY_PORT)")
    gateway.add_argument("--workers", type=int, help="processes (VLARENA_GATEWAY_WORKERS)")
    gateway.set_defaults(func=serve_gateway)
    actions = gateway.add_subparsers(dest="gateway_action", metavar="ACTION")
    new_key = actions.add_parser(
        "new-key", help="make an API key and print its entry for VLARENA_API_KEYS"
    )
    new_key.add_argument("--name", required=True, help="who the key is for")
    new_key.add_argument(
        "--scopes", default="read", help="comma-separated: read, submit, admin (default: read)"
    )
    new_key.add_argument(
        "--team", help="the key's team: its keys share the collections and models they make"
    )
    new_key.set_defaults(func=new_key_command)


def serve_gateway(args: argparse.Namespace) -> int:
    """Serves the API, with `--host`, `--port` and `--workers` over the VLARENA_* settings."""
    # Imported here so that building the `vlarena` parser does not load FastAPI and uvicorn.
    from vlarena.gateway.server import serve

    overrides = {
        "gateway_host": args.host,
        "gateway_port": args.port,
        "gateway_workers": args.workers,
    }
    settings = get_settings().model_copy(
        update={k: v for k, v in overrides.items() if v is not None}
    )
    return serve(settings)


def new_key_command(args: argparse.Namespace) -> int:
    """Prints a new API key once, and the hashed entry that grants it `--scopes`."""
    from vlarena.gateway.auth import Scope, key_digest, new_api_key

    scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
    unknown = sorted(set(scopes) - {s.value for s in Scope})
    if unknown or not scopes:
        print(f"unknown scopes: {', '.join(unknown) or '(none given)'}", file=sys.stderr)
        return EXIT_ERROR
    key = new_api_key()
    entry = {"name": args.name, "sha256": key_digest(key), "scopes": scopes}
    if args.team:
        entry["team"] = args.team
    print(f"API key (shown once; give it to {args.name}): {key}")
    print("entry for VLARENA_API_KEYS or the keys file:")
    print(json.dumps(entry))
    return EXIT_OK
