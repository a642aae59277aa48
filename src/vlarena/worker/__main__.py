"""`python -m vlarena.worker`: a worker configured only by `VLARENA_*` environment variables."""

from vlarena.worker.app import run_worker

raise SystemExit(run_worker())
