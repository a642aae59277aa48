"""`serving.json`: what an exported model version holds and how to run it (no torch needed).

An export directory (a run's `export/`, beside its saved model) holds one ONNX graph per part, the
reduced-precision variants of the vision encoder, and this manifest: per part its file, inputs,
outputs and batching; the vocabulary and decoding limits the pipelines need; the parity of each
graph with PyTorch; the accuracy of each precision on the test split.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlarena.files import write_json
from vlarena.serving.repository import Batching, TensorSpec

SCHEMA = "vlarena.serving/v1"
MANIFEST_FILE = "serving.json"
TOKENIZER_FILE = "tokenizer.json"  # MiniLM's WordPiece, copied beside the graphs


def triton_model_name(model: str, part: str, precision: str = "fp32") -> str:
    """The Triton model serving one part of a registered model: `<model>.<part>`, with a
    `.<precision>` suffix for reduced-precision variants."""
    return f"{model}.{part}" if precision == "fp32" else f"{model}.{part}.{precision}"


@dataclass(frozen=True)
class PartSpec:
    """One exported graph and how Triton serves it."""

    name: str
    file: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    batching: Batching
    variants: dict[str, str] = field(default_factory=dict)  # precision → file
    recipes: dict[str, str] = field(default_factory=dict)  # precision → how it was made

    def file_for(self, precision: str) -> str:
        return self.file if precision == "fp32" else self.variants[precision]

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs],
            "batching": self.batching.to_dict(),
            "variants": dict(self.variants),
            "recipes": dict(self.recipes),
        }

    @classmethod
    def from_dict(cls, name: str, data: dict[str, Any]) -> PartSpec:
        return cls(
            name=name,
            file=data["file"],
            inputs=tuple(TensorSpec.from_dict(s) for s in data["inputs"]),
            outputs=tuple(TensorSpec.from_dict(s) for s in data["outputs"]),
            batching=Batching.from_dict(data["batching"]),
            variants=dict(data.get("variants") or {}),
            recipes=dict(data.get("recipes") or {}),
        )


@dataclass
class ServingManifest:
    """The parsed `serving.json` of one export directory."""

    family: str
    image_size: int
    parts: dict[str, PartSpec]
    vocabulary: list[int]  # the WordPiece id of every model id (see data.tokenizer.Vocabulary)
    text: dict[str, int]  # maxTextLen, maxQueryLen, minilmMaxLen
    parity: dict[str, Any] = field(default_factory=dict)
    accuracy: dict[str, Any] = field(default_factory=dict)
    directory: Path | None = None

    def path_of(self, part: str, precision: str = "fp32") -> Path:
        assert self.directory is not None
        return self.directory / self.parts[part].file_for(precision)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "family": self.family,
            "imageSize": self.image_size,
            "parts": {name: part.to_dict() for name, part in self.parts.items()},
            "vocabulary": {"wordpieceIds": self.vocabulary},
            "text": self.text,
            "parity": self.parity,
            "accuracy": self.accuracy,
        }

    def save(self, directory: Path) -> Path:
        path = directory / MANIFEST_FILE
        write_json(path, self.to_dict())
        self.directory = directory
        return path

    @classmethod
    def load(cls, directory: Path) -> ServingManifest:
        path = Path(directory) / MANIFEST_FILE
        data = json.loads(path.read_text())
        if data.get("schema") != SCHEMA:
            raise ValueError(f"{path}: not a {SCHEMA} manifest")
        return cls(
            family=data["family"],
            image_size=int(data["imageSize"]),
            parts={n: PartSpec.from_dict(n, p) for n, p in data["parts"].items()},
            vocabulary=[int(i) for i in data["vocabulary"]["wordpieceIds"]],
            text={k: int(v) for k, v in data["text"].items()},
            parity=data.get("parity") or {},
            accuracy=data.get("accuracy") or {},
            directory=Path(directory),
        )
