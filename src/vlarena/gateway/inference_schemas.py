"""Request and response bodies of the inference API (`/v1/embed`, `/v1/classify`, `/v1/caption`,
`/v1/vqa`, `/v1/collections`, `/v1/retrieve`), with OpenAPI examples."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from vlarena.jobs.records import RecordModel
from vlarena.jobs.spec import NAME_PATTERN

PNG_1PX = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4//8/AAX+Av4N70a4AAAAAElFTkSuQmCC"
)
ITEM_ID_PATTERN = r"^[A-Za-z0-9._:/-]{1,200}$"
# An item's metadata is stored with its vector and returned with every hit.
MAX_ITEM_METADATA_BYTES = 4096
Precision = Literal["fp32", "fp16", "int8"]


class InferenceRequest(RecordModel):
    """Which model answers: a registered name, with an alias (default `production`) or a
    version; optionally the vision encoder's precision (default: the server's)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(pattern=NAME_PATTERN, examples=["fashion-vl-jepa"])
    alias: str | None = Field(default=None, pattern=NAME_PATTERN, examples=["production"])
    version: int | None = Field(default=None, ge=1)
    precision: Precision | None = None

    @model_validator(mode="after")
    def _alias_or_version(self) -> InferenceRequest:
        if self.alias is not None and self.version is not None:
            raise ValueError("give an alias or a version, not both")
        return self


class ImagesRequest(InferenceRequest):
    """Images as base64 (`image` for one, `images` for a batch), or as multipart file parts
    named `image`."""

    image: str | None = Field(default=None, description="One image, base64 (PNG, JPEG, ...).")
    images: list[str] | None = Field(default=None, description="A batch of base64 images.")

    def encoded_images(self) -> list[str]:
        return ([self.image] if self.image is not None else []) + list(self.images or [])


class EmbedImageRequest(ImagesRequest):
    query: str | None = Field(default=None, max_length=1000, description="Optional text query.")


class EmbedTextRequest(InferenceRequest):
    texts: list[str] = Field(min_length=1, max_length=256)


class ClassifyRequest(ImagesRequest):
    labels: list[str] = Field(min_length=2, description="Candidate labels (texts) to rank.")
    query: str | None = Field(default=None, max_length=1000)


class CaptionRequest(ImagesRequest):
    max_length: int = Field(default=32, ge=1, le=64, description="Most tokens to generate.")


class VqaRequest(ImagesRequest):
    question: str = Field(min_length=1, max_length=1000)
    choices: list[str] | None = Field(
        default=None, min_length=2, description="Candidate answers; free text when omitted."
    )
    max_length: int = Field(default=16, ge=1, le=64)


class ServedModelInfo(RecordModel):
    name: str
    version: int
    family: str
    precision: str


class EmbeddingsResponse(RecordModel):
    model: ServedModelInfo
    dim: int
    embeddings: list[list[float]] = Field(description="L2-normalised: compare by dot product.")


class LabelScore(RecordModel):
    label: str
    score: float = Field(description="Cosine (vl-jepa) or mean token log-likelihood (token-vlm).")


class ClassifyResult(RecordModel):
    labels: list[LabelScore] = Field(description="Every candidate, best first.")


class ClassifyResponse(RecordModel):
    model: ServedModelInfo
    results: list[ClassifyResult]


class CaptionResponse(RecordModel):
    model: ServedModelInfo
    captions: list[str]


class VqaAnswer(RecordModel):
    answer: str
    choices: list[LabelScore] | None = None


class VqaResponse(RecordModel):
    model: ServedModelInfo
    answers: list[VqaAnswer]


# --- collections ---------------------------------------------------------------------------------
class CollectionCreate(InferenceRequest):
    name: str = Field(pattern=NAME_PATTERN, examples=["catalogue"])


class Collection(RecordModel):
    name: str
    model: str
    version: int = Field(description="The model version whose embedding space the items are in.")
    family: str
    dim: int
    items: int
    created_at: datetime
    updated_at: datetime
    owner: str | None = Field(
        default=None,
        description="Who may add items and delete it besides admins: `key:NAME` or `team:NAME`; "
        "null for a collection made before owners were recorded (admins only).",
    )


class CollectionList(RecordModel):
    items: list[Collection]


class CollectionItem(RecordModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=ITEM_ID_PATTERN, examples=["sku-123"])
    text: str | None = Field(default=None, max_length=1000)
    image: str | None = Field(default=None, description="base64 image")
    metadata: dict[str, Any] = Field(
        default_factory=dict,
        max_length=64,
        description=f"Returned with every hit; at most {MAX_ITEM_METADATA_BYTES} bytes as JSON.",
    )

    @field_validator("metadata")
    @classmethod
    def _small_metadata(cls, metadata: dict[str, Any]) -> dict[str, Any]:
        size = len(json.dumps(metadata, separators=(",", ":")).encode())
        if size > MAX_ITEM_METADATA_BYTES:
            raise ValueError(f"{size} bytes as JSON; at most {MAX_ITEM_METADATA_BYTES}")
        return metadata

    @model_validator(mode="after")
    def _one_content(self) -> CollectionItem:
        if (self.text is None) == (self.image is None):
            raise ValueError("give exactly one of 'text' and 'image'")
        return self


class CollectionItems(RecordModel):
    model_config = ConfigDict(extra="forbid")

    items: list[CollectionItem] = Field(min_length=1, max_length=256)


class CollectionItemsResult(RecordModel):
    added: int = Field(description="New items.")
    replaced: int = Field(description="Items whose id existed, now replaced.")
    items: int = Field(description="Items in the collection now.")


class RetrieveRequest(RecordModel):
    """A text or an image query against a collection; the collection fixes the model."""

    model_config = ConfigDict(extra="forbid")

    collection: str = Field(pattern=NAME_PATTERN, examples=["catalogue"])
    text: str | None = Field(default=None, max_length=1000)
    image: str | None = Field(default=None, description="base64 image")
    k: int = Field(default=10, ge=1, le=100)
    kind: Literal["text", "image"] | None = Field(
        default=None, description="Only items of this kind."
    )

    def encoded_images(self) -> list[str]:
        return [self.image] if self.image is not None else []


class RetrieveHit(RecordModel):
    id: str
    kind: str
    score: float
    metadata: dict[str, Any]


class RetrieveResponse(RecordModel):
    collection: str
    model: ServedModelInfo
    hits: list[RetrieveHit]


EXAMPLES: dict[str, dict[str, Any]] = {
    "classify": {
        "model": "fashion-vl-jepa",
        "alias": "production",
        "image": PNG_1PX,
        "labels": ["a bag top left", "a shirt top left"],
    },
    "caption": {"model": "fashion-vl-jepa", "image": PNG_1PX},
    "vqa": {
        "model": "fashion-token-vlm",
        "version": 3,
        "image": PNG_1PX,
        "question": "what is top left?",
        "choices": ["a bag", "a shirt"],
    },
    "embedImage": {"model": "fashion-vl-jepa", "images": [PNG_1PX], "precision": "int8"},
    "embedText": {"model": "fashion-vl-jepa", "texts": ["a bag top left"]},
    "retrieve": {"collection": "catalogue", "text": "a bag top left", "k": 5},
}


_MODEL = {"name": "fashion-vl-jepa", "version": 3, "family": "vl-jepa", "precision": "fp32"}
_COLLECTION = {
    "name": "catalogue",
    "model": "fashion-vl-jepa",
    "version": 3,
    "family": "vl-jepa",
    "dim": 256,
    "items": 1200,
    "createdAt": "2026-11-28T12:00:00Z",
    "updatedAt": "2026-11-28T12:30:00Z",
}
# Example answers for the OpenAPI document, by response model.
RESPONSE_EXAMPLES: dict[str, dict[str, Any]] = {
    "EmbeddingsResponse": {"model": _MODEL, "dim": 3, "embeddings": [[0.6, 0.0, 0.8]]},
    "ClassifyResponse": {
        "model": _MODEL,
        "results": [
            {
                "labels": [
                    {"label": "a bag top left", "score": 0.83},
                    {"label": "a shirt top left", "score": 0.41},
                ]
            }
        ],
    },
    "CaptionResponse": {
        "model": _MODEL,
        "captions": ["a bag top left, a sneaker top right, a dress bottom left and a coat"],
    },
    "VqaResponse": {
        "model": _MODEL,
        "answers": [{"answer": "a bag", "choices": [{"label": "a bag", "score": 0.9}]}],
    },
    "Collection": _COLLECTION,
    "CollectionList": {"items": [_COLLECTION]},
    "CollectionItemsResult": {"added": 2, "replaced": 0, "items": 1202},
    "RetrieveResponse": {
        "collection": "catalogue",
        "model": _MODEL,
        "hits": [{"id": "sku-123", "kind": "image", "score": 0.77, "metadata": {"price": 19}}],
    },
}
