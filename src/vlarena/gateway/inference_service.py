"""What the inference routes share in one gateway process: the Triton channel pool, the serving
manifests of the versions asked for, the collections, and the mapping of serving errors to
API errors. No torch: models run in Triton, pipelines in numpy (`vlarena.serving.pipelines`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypeVar

import anyio
import numpy as np
from fastapi import Depends, Request
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from vlarena.gateway.deps import Services
from vlarena.gateway.errors import ApiError, validation_details
from vlarena.gateway.inference_collections import CollectionStore
from vlarena.gateway.inference_images import decode_images
from vlarena.gateway.inference_schemas import InferenceRequest, ServedModelInfo
from vlarena.gateway.metrics import INFERENCE_DURATION, TRITON_ERRORS
from vlarena.jobs.records import ModelVersion
from vlarena.jobs.registry import ModelRegistry
from vlarena.rundirs import RunDir
from vlarena.serving.client import ServingFailed, ServingUnavailable, TritonPool, TritonRunner
from vlarena.serving.config import ServingSettings, get_serving_settings
from vlarena.serving.manifest import ServingManifest
from vlarena.serving.pipelines import ServedModel, UnsupportedVerb

Body = TypeVar("Body", bound=BaseModel)
T = TypeVar("T")
MANIFEST_CACHE = 64
DEFAULT_ALIAS = "production"


K = TypeVar("K")


def _cached(cache: OrderedDict[K, T], key: K, make: Callable[[], T]) -> T:
    """`cache[key]`, made by `make()` when missing; the MANIFEST_CACHE entries used last stay."""
    value = cache.get(key)
    if value is None:
        value = cache[key] = make()
        while len(cache) > MANIFEST_CACHE:
            cache.popitem(last=False)
    else:
        cache.move_to_end(key)
    return value


class InferenceService:
    def __init__(
        self, serving: ServingSettings, registry: ModelRegistry, collections: CollectionStore
    ) -> None:
        self.settings = serving
        self.registry = registry
        self.collections = collections
        self.pool = TritonPool(
            serving.triton_url, serving.triton_pool_size, serving.triton_timeout_seconds
        )
        self._manifests: OrderedDict[tuple[str, int], ServingManifest] = OrderedDict()
        # Served models by (name, version, precision), kept like the manifests: each holds its
        # tokenizers, loaded once, and the embeddings of the texts it encoded last.
        self._served: OrderedDict[tuple[str, int, str], ServedModel] = OrderedDict()
        self._decoders = anyio.CapacityLimiter(serving.inference_decode_threads)

    async def decode(self, blobs: Sequence[bytes], size: int) -> np.ndarray:
        """A request's images as pixels, decoded in one of `inference_decode_threads` threads:
        a batch takes seconds the event loop (health probes included) must not wait."""
        return await anyio.to_thread.run_sync(
            decode_images, blobs, size, self.settings, limiter=self._decoders
        )

    async def offload(self, work: Callable[[], T]) -> T:
        """Tokenising and other CPU-bound request work, in the same bounded pool as decoding."""
        return await anyio.to_thread.run_sync(work, limiter=self._decoders)

    async def close(self) -> None:
        await self.pool.close()

    async def version_of(
        self, name: str, alias: str | None = None, version: int | None = None
    ) -> ModelVersion:
        """The registry record a request names; 404/409 that say what to do otherwise."""
        if version is not None:
            record = await self.registry.version(name, version)
            if record is None:
                raise ApiError(404, "not_found", f"no version {version} of model {name!r}")
        else:
            alias = alias or DEFAULT_ALIAS
            if await self.registry.get_model(name) is None:
                raise ApiError(404, "not_found", f"no model {name!r}")
            record = await self.registry.resolve(name, alias=alias)
            if record is None:
                raise ApiError(
                    404,
                    "not_found",
                    f"model {name!r} has no alias {alias!r}: give a version, or set the alias "
                    f"with POST /v1/models/{name}/aliases",
                )
        if record.status != "READY":
            raise ApiError(
                409, "version_not_ready", f"{name} version {record.version} is {record.status}"
            )
        return record

    def manifest(self, record: ModelVersion) -> ServingManifest:
        def load() -> ServingManifest:
            try:
                return ServingManifest.load(RunDir.of_model(record.path).export)
            except (OSError, ValueError):
                raise ApiError(
                    409,
                    "not_exported",
                    f"{record.name} version {record.version} has no serving export; run "
                    f"`vlarena export {RunDir.of_model(record.path).export.parent}`",
                ) from None

        return _cached(self._manifests, (record.name, record.version), load)

    def served(
        self, record: ModelVersion, precision: str | None
    ) -> tuple[ServedModel, ServedModelInfo]:
        manifest = self.manifest(record)
        precision = precision or self.settings.serving_precision
        if precision != "fp32" and precision not in manifest.parts["vision"].variants:
            raise ApiError(
                422,
                "validation_error",
                f"{record.name} v{record.version} has no {precision} variant",
            )
        model = _cached(
            self._served,
            (record.name, record.version, precision),
            lambda: ServedModel(
                manifest,
                TritonRunner(self.pool, record.name, record.version),
                precision,
                offload=self.offload,
            ),
        )
        info = ServedModelInfo(
            name=record.name, version=record.version, family=record.family, precision=precision
        )
        return model, info

    async def model(self, request: InferenceRequest) -> tuple[ServedModel, ServedModelInfo]:
        record = await self.version_of(request.model, request.alias, request.version)
        return self.served(record, request.precision)


@contextlib.contextmanager
def serving_errors(retry_after: int, endpoint: str, model: str):
    """Runs the model work of one inference route: times it (`vlarena_inference_duration_seconds`)
    and turns serving failures into API errors, 503 with Retry-After while no replica can answer
    (counted in `vlarena_triton_errors_total`)."""
    start = time.perf_counter()
    try:
        yield
    except ServingUnavailable as exc:
        TRITON_ERRORS.labels(model, endpoint, "unavailable").inc()
        raise ApiError(
            503, "model_unavailable", str(exc), headers={"Retry-After": str(retry_after)}
        ) from None
    except ServingFailed as exc:
        TRITON_ERRORS.labels(model, endpoint, "failed").inc()
        raise ApiError(502, "inference_failed", str(exc)) from None
    except UnsupportedVerb as exc:
        raise ApiError(422, "unsupported_for_family", str(exc)) from None
    finally:
        INFERENCE_DURATION.labels(model, endpoint).observe(time.perf_counter() - start)


_lock = asyncio.Lock()


def create_inference_service(services: Services, serving: ServingSettings) -> InferenceService:
    store = CollectionStore(services.store.redis, services.settings.key_prefix)
    return InferenceService(serving, services.registry, store)


def serving_settings(state: Any) -> ServingSettings:
    """The serving settings of an app (its `state`): `state.serving_settings`, or the
    environment's."""
    return getattr(state, "serving_settings", None) or get_serving_settings()


async def get_inference(request: Request) -> InferenceService:
    """The process's InferenceService: `app.state.inference` when the app's lifespan made one,
    else made on first use from the app's services (and `app.state.serving_settings`, or the
    environment)."""
    state = request.app.state
    service = getattr(state, "inference", None)
    if service is None:
        async with _lock:
            service = getattr(state, "inference", None)
            if service is None:
                service = state.inference = create_inference_service(
                    state.services, serving_settings(state)
                )
    return service


InferenceDep = Annotated[InferenceService, Depends(get_inference)]


# --- request bodies: JSON or multipart -------------------------------------------------------
def _validation_error(exc: ValidationError) -> ApiError:
    details = validation_details(list(exc.errors()))
    first = details[0]
    where = f"{first['field']}: " if first["field"] else ""
    return ApiError(422, "validation_error", f"{where}{first['message']}", details)


async def read_body(
    request: Request, model: type[Body], settings: ServingSettings
) -> tuple[Body, list[bytes]]:
    """The request body as `model`, from JSON or from multipart/form-data (file parts named
    `image` or `images`, other fields as form fields, list fields repeated), and the uploaded
    image bytes. The body is within `inference_max_body_bytes`: the app's `BodyLimit` saw
    to it."""
    kind = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    uploads: list[bytes] = []
    if kind == "application/json":
        try:
            data = json.loads(await request.body() or b"null")
        except ValueError:
            raise ApiError(422, "validation_error", "the body is not valid JSON") from None
        except RecursionError:
            raise ApiError(
                422, "validation_error", "the body is JSON nested too deeply to read"
            ) from None
    elif kind == "multipart/form-data":
        form = await request.form(max_files=settings.inference_max_batch + 1)
        fields = getattr(model, "model_fields", {})
        by_alias = {(f.alias or n): n for n, f in fields.items()} | {n: n for n in fields}
        data = {}
        for key in form:
            values = form.getlist(key)
            files = [v for v in values if isinstance(v, UploadFile)]
            if files:
                for upload in files:
                    uploads.append(await upload.read(settings.inference_max_image_bytes + 1))
                continue
            field = fields.get(by_alias.get(key, ""))
            is_list = field is not None and "list" in str(field.annotation)
            data[key] = list(values) if is_list else values[0]
    else:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"content type {kind!r}; send application/json or multipart/form-data",
        )
    try:
        body = model.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(exc) from None
    _check_text_lengths(body, settings.inference_max_text_chars)
    return body, uploads


# The fields of inference requests that hold text for the tokenizer.
TEXT_FIELDS = ("labels", "choices", "texts", "query", "question", "text")


def _check_text_lengths(body: object, limit: int) -> None:
    """422 for a text longer than `limit` characters: tokenising it would hold the event loop
    for nothing the model can read (it sees at most 64 tokens)."""
    for name in TEXT_FIELDS:
        value = getattr(body, name, None)
        texts = [value] if isinstance(value, str) else list(value or [])
        for i, text in enumerate(texts):
            if isinstance(text, str) and len(text) > limit:
                where = name if isinstance(value, str) else f"{name}[{i}]"
                raise ApiError(
                    422,
                    "validation_error",
                    f"{where}: {len(text):,} characters; at most {limit:,}: shorten it",
                )
