"""/v1/embed, /v1/classify, /v1/caption, /v1/vqa, /v1/collections, /v1/retrieve: inference
through Triton (gRPC) with the registry's models, chosen by name and alias or version."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Body, Request, Response
from fastapi import Path as PathParam
from fastapi.routing import APIRoute
from pydantic import BaseModel

from vlarena.gateway.deps import KeyFirstRoute, ReadAccess, SubmitAccess, require_owner
from vlarena.gateway.errors import ApiError, error_responses
from vlarena.gateway.inference_collections import CollectionInfo
from vlarena.gateway.inference_images import from_base64
from vlarena.gateway.inference_schemas import (
    EXAMPLES,
    RESPONSE_EXAMPLES,
    CaptionRequest,
    CaptionResponse,
    ClassifyRequest,
    ClassifyResponse,
    ClassifyResult,
    Collection,
    CollectionCreate,
    CollectionItems,
    CollectionItemsResult,
    CollectionList,
    EmbeddingsResponse,
    EmbedImageRequest,
    EmbedTextRequest,
    ImagesRequest,
    LabelScore,
    RetrieveHit,
    RetrieveRequest,
    RetrieveResponse,
    VqaAnswer,
    VqaRequest,
    VqaResponse,
)
from vlarena.gateway.inference_service import (
    InferenceDep,
    InferenceService,
    read_body,
    serving_errors,
)
from vlarena.jobs.ownership import Owner
from vlarena.jobs.spec import NAME_PATTERN
from vlarena.serving.pipelines import ServedModel, normalize

router = APIRouter(tags=["inference"], route_class=KeyFirstRoute)
# The paths of the routes above, which take images: their bodies get the inference limit.
PATH_PREFIXES = (
    "/v1/embed/",
    "/v1/classify",
    "/v1/caption",
    "/v1/vqa",
    "/v1/collections",
    "/v1/retrieve",
)

CollectionName = Annotated[str, PathParam(pattern=NAME_PATTERN, examples=["catalogue"])]
# 409: the version is not READY or has no serving export; 502: Triton failed to run it.
ERRORS = error_responses(401, 404, 409, 422, 502, 503) | {
    413: {"description": "An image or the request is too large; the message says the limit."},
    415: {"description": "Not JSON or multipart, or not an image format the API reads."},
}


def _request_body(model: type[BaseModel], example: str) -> dict[str, Any]:
    """OpenAPI for a body sent as JSON (base64 images) or multipart (file parts `image`)."""
    schema = model.model_json_schema(by_alias=True)
    props = {k: v for k, v in schema["properties"].items() if k not in ("image", "images")}
    multipart = {
        "type": "object",
        "required": schema.get("required", []),
        "properties": props
        | {"image": {"type": "array", "items": {"type": "string", "format": "binary"}}},
    }
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": schema, "example": EXAMPLES[example]},
                "multipart/form-data": {"schema": multipart},
            },
        }
    }


async def _images(
    body: ImagesRequest | RetrieveRequest,
    uploads: list[bytes],
    model: ServedModel,
    inference: InferenceService,
) -> np.ndarray:
    blobs = [from_base64(text, i) for i, text in enumerate(body.encoded_images())] + uploads
    return await inference.decode(blobs, model.manifest.image_size)


def _check_candidates(values: list[str], what: str, inference: InferenceService) -> None:
    limit = inference.settings.inference_max_candidates
    if len(values) > limit:
        raise ApiError(
            422, "validation_error", f"{len(values)} {what}; at most {limit}: send fewer"
        )


# --- embeddings ----------------------------------------------------------------------------------
@router.post(
    "/v1/embed/image",
    summary="Embed images",
    response_model=EmbeddingsResponse,
    openapi_extra=_request_body(EmbedImageRequest, "embedImage"),
    responses=ERRORS,
)
async def embed_image(
    request: Request, _principal: ReadAccess, inference: InferenceDep
) -> EmbeddingsResponse:
    """VL-JEPA's predicted embeddings of images (optionally given a text query), in the space
    of `/v1/embed/text`."""
    body, uploads = await read_body(request, EmbedImageRequest, inference.settings)
    model, info = await inference.model(body)
    images = await _images(body, uploads, model, inference)
    with serving_errors(inference.settings.retry_after_seconds, "embed_image", info.name):
        tokens = await model.image_tokens(images)
        queries = [body.query] * len(images) if body.query else None
        emb = normalize(await model.predict_embedding(tokens, queries))
    return EmbeddingsResponse(model=info, dim=emb.shape[1], embeddings=emb.tolist())


@router.post(
    "/v1/embed/text",
    summary="Embed texts",
    response_model=EmbeddingsResponse,
    responses=ERRORS,
)
async def embed_text(
    body: Annotated[
        EmbedTextRequest, Body(openapi_examples={"texts": {"value": EXAMPLES["embedText"]}})
    ],
    _principal: ReadAccess,
    inference: InferenceDep,
) -> EmbeddingsResponse:
    """VL-JEPA's target embeddings of texts (MiniLM + head)."""
    model, info = await inference.model(body)
    with serving_errors(inference.settings.retry_after_seconds, "embed_text", info.name):
        emb = normalize(await model.encode_text(body.texts))
    return EmbeddingsResponse(model=info, dim=emb.shape[1], embeddings=emb.tolist())


# --- classify, caption, vqa ---------------------------------------------------------------------
@router.post(
    "/v1/classify",
    summary="Rank candidate labels for images",
    response_model=ClassifyResponse,
    openapi_extra=_request_body(ClassifyRequest, "classify"),
    responses=ERRORS,
)
async def classify(
    request: Request, _principal: ReadAccess, inference: InferenceDep
) -> ClassifyResponse:
    """Every label scored for every image, best first: cosine between the predicted and the
    label's embedding (VL-JEPA), or the label's mean token log-likelihood (token VLM)."""
    body, uploads = await read_body(request, ClassifyRequest, inference.settings)
    _check_candidates(body.labels, "labels", inference)
    model, info = await inference.model(body)
    images = await _images(body, uploads, model, inference)
    with serving_errors(inference.settings.retry_after_seconds, "classify", info.name):
        tokens = await model.image_tokens(images)
        queries = [body.query] * len(images) if body.query else None
        scores = await model.score_candidates(tokens, body.labels, queries)
    return ClassifyResponse(model=info, results=[_ranked(body.labels, row) for row in scores])


def _ranked(labels: list[str], scores: np.ndarray) -> ClassifyResult:
    order = np.argsort(-scores, kind="stable")
    return ClassifyResult(
        labels=[LabelScore(label=labels[i], score=float(scores[i])) for i in order]
    )


@router.post(
    "/v1/caption",
    summary="Caption images",
    response_model=CaptionResponse,
    openapi_extra=_request_body(CaptionRequest, "caption"),
    responses=ERRORS,
)
async def caption(
    request: Request, _principal: ReadAccess, inference: InferenceDep
) -> CaptionResponse:
    """Greedy captions: the token VLM decodes from the image; VL-JEPA predicts the caption's
    embedding and its Y-decoder turns it into text."""
    body, uploads = await read_body(request, CaptionRequest, inference.settings)
    model, info = await inference.model(body)
    images = await _images(body, uploads, model, inference)
    with serving_errors(inference.settings.retry_after_seconds, "caption", info.name):
        tokens = await model.image_tokens(images)
        captions = await model.generate(tokens, max_len=body.max_length)
    return CaptionResponse(model=info, captions=captions)


@router.post(
    "/v1/vqa",
    summary="Answer a question about images",
    response_model=VqaResponse,
    openapi_extra=_request_body(VqaRequest, "vqa"),
    responses=ERRORS,
)
async def vqa(request: Request, _principal: ReadAccess, inference: InferenceDep) -> VqaResponse:
    """With `choices`, every choice scored given the question, best first (the answer is the
    best); without, a free-text answer decoded given the question."""
    body, uploads = await read_body(request, VqaRequest, inference.settings)
    model, info = await inference.model(body)
    images = await _images(body, uploads, model, inference)
    queries = [body.question] * len(images)
    with serving_errors(inference.settings.retry_after_seconds, "vqa", info.name):
        tokens = await model.image_tokens(images)
        if body.choices:
            _check_candidates(body.choices, "choices", inference)
            scores = await model.score_candidates(tokens, body.choices, queries)
            ranked = [_ranked(body.choices, row).labels for row in scores]
            answers = [VqaAnswer(answer=r[0].label, choices=r) for r in ranked]
        else:
            texts = await model.generate(tokens, queries, max_len=body.max_length)
            answers = [VqaAnswer(answer=t) for t in texts]
    return VqaResponse(model=info, answers=answers)


# --- collections and retrieval ------------------------------------------------------------------
def _collection(c: CollectionInfo) -> Collection:
    return Collection(
        name=c.name,
        model=c.model,
        version=c.version,
        family=c.family,
        dim=c.dim,
        items=c.items,
        created_at=datetime.fromtimestamp(c.created_at_ms / 1000, tz=UTC),
        updated_at=datetime.fromtimestamp(c.updated_at_ms / 1000, tz=UTC),
        owner=c.owner.label if c.owner is not None else None,
    )


async def _require_collection(inference: InferenceService, name: str) -> CollectionInfo:
    found = await inference.collections.get(name)
    if found is None:
        raise ApiError(404, "not_found", f"no collection {name!r}")
    return found


async def _collection_model(inference: InferenceService, c: CollectionInfo):
    record = await inference.registry.version(c.model, c.version)
    if record is None:
        raise ApiError(409, "conflict", f"collection {c.name!r}: {c.model} v{c.version} is gone")
    if not record.aliases:
        raise ApiError(
            409,
            "conflict",
            f"collection {c.name!r} holds embeddings of {c.model} v{c.version}, which no alias "
            f"points at, so no replica serves it: point an alias at v{c.version}, or make a new "
            "collection with the served version",
        )
    return inference.served(record, None)


@router.post(
    "/v1/collections",
    status_code=201,
    summary="Create a collection",
    response_model=Collection,
    responses=error_responses(401, 403, 404, 409, 422),
)
async def create_collection(
    body: Annotated[
        CollectionCreate,
        Body(
            openapi_examples={
                "create": {"value": {"name": "catalogue", "model": "fashion-vl-jepa"}}
            }
        ),
    ],
    principal: SubmitAccess,
    inference: InferenceDep,
) -> Collection:
    """An empty collection whose items the model's version (resolved now, then fixed) embeds.
    It belongs to the caller's key (to its team when the key has one): only they and admin
    keys may add items to it or delete it."""
    record = await inference.version_of(body.model, body.alias, body.version)
    if record.family != "vl-jepa":
        raise ApiError(
            422,
            "unsupported_for_family",
            f"collections hold embeddings; {record.name} is a {record.family} model, use a "
            "vl-jepa one",
        )
    inference.manifest(record)  # it must be exported to be served
    made = await inference.collections.create(
        body.name, record.name, record.version, record.family, Owner.of(principal.caller)
    )
    if made is None:
        raise ApiError(409, "conflict", f"collection {body.name!r} exists")
    return _collection(made)


@router.get("/v1/collections", summary="List collections", response_model=CollectionList)
async def list_collections(_principal: ReadAccess, inference: InferenceDep) -> CollectionList:
    return CollectionList(items=[_collection(c) for c in await inference.collections.list()])


@router.get(
    "/v1/collections/{name}",
    summary="Get a collection",
    response_model=Collection,
    responses=error_responses(401, 404),
)
async def get_collection(
    name: CollectionName, _principal: ReadAccess, inference: InferenceDep
) -> Collection:
    return _collection(await _require_collection(inference, name))


@router.delete(
    "/v1/collections/{name}",
    status_code=204,
    summary="Delete a collection",
    responses=error_responses(401, 403, 404),
)
async def delete_collection(
    name: CollectionName, principal: SubmitAccess, inference: InferenceDep
) -> Response:
    """Its owner's keys or an admin key may."""
    found = await _require_collection(inference, name)
    require_owner(principal, found.owner, f"collection {name!r}")
    if not await inference.collections.delete(name):
        raise ApiError(404, "not_found", f"no collection {name!r}")
    return Response(status_code=204)


@router.post(
    "/v1/collections/{name}/items",
    summary="Add items to a collection",
    response_model=CollectionItemsResult,
    responses=ERRORS | error_responses(403, 409),
)
async def add_items(
    name: CollectionName,
    body: CollectionItems,
    principal: SubmitAccess,
    inference: InferenceDep,
) -> CollectionItemsResult:
    """Texts and images, each embedded by the collection's model; an existing id is replaced.
    Its owner's keys or an admin key may."""
    found = await _require_collection(inference, name)
    require_owner(principal, found.owner, f"collection {name!r}")
    if found.items + len(body.items) > inference.settings.inference_max_collection_items:
        raise ApiError(
            422,
            "validation_error",
            f"collection {name!r} would exceed {inference.settings.inference_max_collection_items} items",
        )
    model, _info = await _collection_model(inference, found)
    texts = [(i, item.text) for i, item in enumerate(body.items) if item.text is not None]
    pictures = [(i, item.image) for i, item in enumerate(body.items) if item.image is not None]
    vectors: np.ndarray | None = None
    with serving_errors(inference.settings.retry_after_seconds, "collection_items", found.model):
        parts: list[tuple[list[int], np.ndarray]] = []
        if texts:
            parts.append(([i for i, _ in texts], await model.encode_text([t for _, t in texts])))
        if pictures:
            blobs = [from_base64(text, i) for i, text in pictures]
            for s in range(0, len(blobs), inference.settings.inference_max_batch):
                chunk = blobs[s : s + inference.settings.inference_max_batch]
                images = await inference.decode(chunk, model.manifest.image_size)
                tokens = await model.image_tokens(images)
                rows = [i for i, _ in pictures[s : s + len(chunk)]]
                parts.append((rows, await model.predict_embedding(tokens)))
    for rows, emb in parts:
        if vectors is None:
            vectors = np.zeros((len(body.items), emb.shape[1]), np.float32)
        vectors[rows] = normalize(emb)
    assert vectors is not None
    added = await inference.collections.add(
        name,
        [item.id for item in body.items],
        ["text" if item.text is not None else "image" for item in body.items],
        [item.metadata for item in body.items],
        vectors,
    )
    total = (await _require_collection(inference, name)).items
    return CollectionItemsResult(added=added, replaced=len(body.items) - added, items=total)


@router.post(
    "/v1/retrieve",
    summary="Search a collection with a text or an image",
    response_model=RetrieveResponse,
    openapi_extra=_request_body(RetrieveRequest, "retrieve"),
    responses=ERRORS | error_responses(409),
)
async def retrieve(
    request: Request, _principal: ReadAccess, inference: InferenceDep
) -> RetrieveResponse:
    """The `k` items nearest the query by cosine: a text query is embedded by the Y-encoder,
    an image by the predictor, both in the collection's model version."""
    body, uploads = await read_body(request, RetrieveRequest, inference.settings)
    blobs = [from_base64(text, 0) for text in body.encoded_images()] + uploads
    if (body.text is None) == (not blobs):
        raise ApiError(422, "validation_error", "give exactly one query: `text` or `image`")
    found = await _require_collection(inference, body.collection)
    model, info = await _collection_model(inference, found)
    with serving_errors(inference.settings.retry_after_seconds, "retrieve", info.name):
        if body.text is not None:
            query = (await model.encode_text([body.text]))[0]
        else:
            images = await inference.decode(blobs[:1], model.manifest.image_size)
            query = (await model.predict_embedding(await model.image_tokens(images)))[0]
    hits = await inference.collections.search(body.collection, normalize(query), body.k, body.kind)
    return RetrieveResponse(
        collection=body.collection,
        model=info,
        hits=[RetrieveHit(id=i, kind=k, score=s, metadata=m) for i, k, s, m in hits],
    )


def _document_answers() -> None:
    """Adds an example answer to every route's success response in the OpenAPI document."""
    for route in router.routes:
        if not isinstance(route, APIRoute):  # only API routes have a response model
            continue
        model = getattr(route, "response_model", None)
        example = RESPONSE_EXAMPLES.get(getattr(model, "__name__", ""))
        if example is not None:
            response = route.responses.setdefault(route.status_code or 200, {})
            response["content"] = {"application/json": {"example": example}}


_document_answers()
