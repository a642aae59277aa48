"""The FastAPI application: `create_app()` wires settings, stores, auth, metrics and routes."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

import vlarena
from vlarena.gateway.auth import ApiKeys
from vlarena.gateway.deps import Services, document_statuses
from vlarena.gateway.documents import JobDocuments
from vlarena.gateway.errors import install_error_handlers
from vlarena.gateway.inference_service import serving_settings
from vlarena.gateway.limits import BodyLimit, RateLimits
from vlarena.gateway.observe import TALLY, RequestObserver
from vlarena.gateway.routes import health, inference, jobs, models, reports
from vlarena.jobs.dispatch import JobDispatcher
from vlarena.jobs.registry import ModelRegistry
from vlarena.jobs.store import JobStore, connect
from vlarena.jobs.streams import JobStreams
from vlarena.settings import Settings, get_settings

log = logging.getLogger(__name__)

# Redis connections the log and event followers of one gateway process share.
FOLLOWER_CONNECTIONS = 8

DESCRIPTION = """
Submit training, evaluation and comparison jobs for the token-prediction VLM and VL-JEPA
families; follow their progress and logs; fetch their artifacts; manage the model registry.

Authenticate with `Authorization: Bearer <API key>`. Scopes: `read` (look), `submit` (also
submit and cancel own jobs, make collections), `admin` (everything). Collections and model
names belong to the key (or its team) that made them: only it and admin keys change them or
set a model's aliases. Errors always have the shape `{"error": {"code", "message", "details"}}`.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """The gateway app; with no argument, configured from `VLARENA_*` environment variables."""
    settings = settings or get_settings()
    keys = ApiKeys.from_settings(settings)
    if not keys and not settings.auth_disabled:
        log.warning("no API keys configured: every request will get 401")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = connect(settings)
        # Followers of log streams read through a small pool of their own: however many there
        # are, they never take the connections every other request needs.
        follower_redis = connect(settings, max_connections=FOLLOWER_CONNECTIONS)
        store = JobStore(redis, settings)
        app.state.services = Services(
            settings=settings,
            keys=keys,
            store=store,
            documents=JobDocuments(store),
            streams=JobStreams(
                follower_redis,
                store.keys,
                max_followers=settings.stream_max_followers,
                idle_seconds=settings.stream_idle_seconds,
                max_seconds=settings.stream_max_seconds,
            ),
            registry=ModelRegistry(redis, store.keys, store.scripts),
            dispatcher=JobDispatcher(settings),
            limits=RateLimits(redis, store.keys, settings),
        )
        # What is alive now (modules, routes, schemas: ~100k objects) lives as long as the
        # process. Frozen, it drops out of the garbage collector's full passes, each of which
        # would otherwise stall the process ~70 ms under load: the p99 latency of a busy gateway.
        gc.collect()
        gc.freeze()
        flusher = asyncio.create_task(TALLY.flush_every())
        try:
            yield
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            gc.unfreeze()
            # The inference service (Triton channels) is made on first use: close it if it was.
            service = getattr(app.state, "inference", None)
            if service is not None:
                await service.close()
            await follower_redis.aclose()
            await redis.aclose()

    app = FastAPI(
        title="vlarena",
        version=vlarena.__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_tags=[
            {"name": "jobs", "description": "Training, evaluation and comparison jobs."},
            {"name": "models", "description": "The model registry: versions and aliases."},
            {"name": "reports", "description": "Comparison reports through signed links."},
            {"name": "inference", "description": "Embeddings, classification, captions, VQA."},
            {"name": "health", "description": "Probes and Prometheus metrics."},
        ],
    )
    install_error_handlers(app)
    app.add_middleware(
        BodyLimit,
        limit=settings.max_body_bytes,
        image_prefixes=inference.PATH_PREFIXES,
        image_limit=lambda scope: serving_settings(scope["app"].state).inference_max_body_bytes,
    )
    # Every log line of a request carries its id; every request is counted and timed (a 413
    # of the body limit included).
    app.add_middleware(RequestObserver)
    for router in (jobs.router, reports.router, models.router, inference.router, health.router):
        document_statuses(router.routes)
        app.include_router(router)
    return app
