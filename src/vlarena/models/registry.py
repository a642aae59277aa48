"""One registry that builds, saves and loads any model family by name from dataclass configs."""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from vlarena.data.tokenizer import Vocabulary, WordPieceTokenizer
from vlarena.files import atomic_path
from vlarena.models.base import VLModel
from vlarena.models.errors import ConfigError, ModelFileError
from vlarena.models.token_vlm import TokenVLM, TokenVLMConfig
from vlarena.models.vl_jepa import VLJEPA, VLJEPAConfig
from vlarena.models.x_encoders import XEncoderConfig

# Sizes by name. "small" is the calibrated default (d=256, 2 layers, 4 heads, FFN 1024);
# "tiny" keeps tests and smoke runs to seconds on a CPU.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "d_model": 64,
        "n_layers": 1,
        "n_heads": 2,
        "d_ff": 128,
        "dropout": 0.0,
        "embed_dim": 64,
        "decoder_d_model": 64,
        "decoder_layers": 1,
        "decoder_heads": 2,
        "decoder_d_ff": 128,
    },
    "small": {"d_model": 256, "n_layers": 2, "n_heads": 4, "d_ff": 1024},
    "base": {"d_model": 512, "n_layers": 4, "n_heads": 8, "d_ff": 2048},
}


@dataclasses.dataclass(frozen=True)
class Family:
    config_cls: type
    build: Callable[[Any, Sequence[str], dict[str, Any] | None], VLModel]


def _vocabulary(kind: str | None, texts: Sequence[str], state: dict[str, Any] | None) -> Vocabulary:
    tok = WordPieceTokenizer.minilm()
    if state is not None:
        return Vocabulary.from_dict(state["vocab"], tok)
    if kind == "full":
        return Vocabulary.full(tok)
    if kind == "captions":
        return Vocabulary.from_texts(tok, texts)
    raise ConfigError(
        "model.config.vocabulary", f"vocabulary must be 'captions' or 'full', got {kind!r}"
    )


def _build_token_vlm(
    cfg: TokenVLMConfig, texts: Sequence[str], state: dict[str, Any] | None
) -> TokenVLM:
    model = TokenVLM(cfg, _vocabulary(cfg.vocabulary, texts, state))
    if state is None:  # a loaded model's weights come from its file
        model.apply_text_prior()
    return model


def _build_vl_jepa(cfg: VLJEPAConfig, texts: Sequence[str], state: dict[str, Any] | None) -> VLJEPA:
    # Its vocabulary serves the query embedding and the Y-decoder: the training texts' ids.
    return VLJEPA(cfg, _vocabulary("captions", texts, state))


FAMILIES: dict[str, Family] = {
    "token-vlm": Family(TokenVLMConfig, _build_token_vlm),
    "vl-jepa": Family(VLJEPAConfig, _build_vl_jepa),
}


def family_names() -> list[str]:
    return sorted(FAMILIES)


def _family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ConfigError(
            "model.family",
            f"unknown model family {name!r}; choose one of {', '.join(family_names())}",
        ) from None


def _apply(cls: type, values: dict[str, Any], where: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(
                f"{where}.{key}",
                f"unknown field of {cls.__name__}; known fields: {', '.join(sorted(fields))}",
            )
        if fields[key].type in ("XEncoderConfig", XEncoderConfig) and isinstance(value, dict):
            value = _apply(XEncoderConfig, value, f"{where}.{key}")
        kwargs[key] = value
    return cls(**kwargs)


def make_config(family: str, overrides: dict[str, Any] | None = None) -> Any:
    """The config of `family`: a preset (`"preset": "tiny"|"small"|"base"`) then overrides."""
    values = dict(overrides or {})
    preset = values.pop("preset", "small")
    if preset not in PRESETS:
        raise ConfigError(
            "model.config.preset", f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}"
        )
    cls = _family(family).config_cls
    names = {f.name for f in dataclasses.fields(cls)}
    base = {k: v for k, v in PRESETS[preset].items() if k in names}
    return _apply(cls, {**base, **values}, "model.config")


def build_model(family: str, config: Any, texts: Sequence[str]) -> VLModel:
    """A new model of `family`; `texts` are the training texts (captions, queries, answers)."""
    cfg = config if dataclasses.is_dataclass(config) else make_config(family, config)
    return _family(family).build(cfg, texts, None)


def save_model(model: VLModel, path: Path) -> Path:
    """Writes a self-contained model file (frozen pretrained parts are rebuilt on load)."""
    blob = {
        "family": model.family,
        "config": dataclasses.asdict(model.cfg),
        "extra": model.extra_state(),
        "state_dict": model.trainable_state_dict(),
    }
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)
    return path


def load_model(path: Path, map_location: str | torch.device = "cpu") -> VLModel:
    """Loads a model written by `save_model`."""
    # Tensors and plain containers only: a model file can come from someone else, and a pickle
    # that runs code when loaded must not.
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ModelFileError(
            f"{path}: not a vlarena model file (it holds objects other than tensors and plain "
            f"containers): {str(exc).splitlines()[0]}"
        ) from exc
    family = _family(blob["family"])
    cfg = _apply(family.config_cls, blob["config"], "saved config")
    model = family.build(cfg, [], blob["extra"])
    missing, unexpected = model.load_state_dict(blob["state_dict"], strict=False)
    skip = tuple(model.frozen_pretrained_prefixes())
    missing = [k for k in missing if not k.startswith(skip)]
    if missing or unexpected:
        raise ModelFileError(
            f"{path}: checkpoint does not fit the model: missing {missing}, unexpected {unexpected}"
        )
    return model.eval()
