"""`python -m vlarena.gateway`: the gateway configured only by `VLARENA_*` environment variables."""

from vlarena.gateway.server import serve
from vlarena.settings import get_settings

raise SystemExit(serve(get_settings()))
