"""What every model family exposes, so training, evaluation and export never branch on the family."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from vlarena.data.tokenizer import Vocabulary
from vlarena.models.x_encoders import XEncoder

Batch = dict[str, Any]
# Where a family's text side starts: from pretrained MiniLM, or at random (README, "Priors").
TEXT_PRIORS = ("pretrained", "scratch")


@dataclass
class AuxiliaryStage:
    """A training stage after the main loop: `module` learns from batches that `loss` draws
    with the stage's generator, under AdamW with linear warmup and cosine decay."""

    name: str  # the prefix of its statistics, e.g. "ydecoder"
    module: nn.Module
    loss: Callable[[torch.Generator], Tensor]
    steps: int
    batch_size: int
    learning_rate: float
    texts: int  # distinct texts it learns from
    weight_decay: float = 0.01
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    prepare_flops: int = 0  # spent before its steps (e.g. predicting what it learns from)


class VLModel(nn.Module):
    """A vision-language model over an X-encoder.

    "Visual inputs" are what the X-encoder's consumers take: cached features (B, T, C) when
    the X-encoder is frozen (computed once per dataset), pixels (B, 3, H, W) when it trains.
    """

    family: ClassVar[str]
    x_encoder: XEncoder
    vocab: Vocabulary  # the ids the model reads and writes text with
    cfg: Any

    def forward(self, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        """The training loss: `forward` is what DistributedDataParallel wraps."""
        return self.loss(batch)

    # --- the shared verbs -------------------------------------------------------------
    def encode_image(self, images: Tensor) -> Tensor:
        """Pixels (B, 3, H, W) in [-1, 1] → the visual inputs the other verbs take."""
        return self.x_encoder(images) if self.x_encoder.frozen else images

    def make_batch(
        self, visual: Tensor, texts: Sequence[str], queries: Sequence[str | None] | None = None
    ) -> Batch:
        """A training batch: visual inputs with their target texts and optional queries."""
        raise NotImplementedError

    def loss(self, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        """The training loss of a batch and scalar statistics to log beside it."""
        raise NotImplementedError

    def score_candidates(
        self,
        visual: Tensor,
        candidates: Sequence[str] | Sequence[Sequence[str]],
        queries: Sequence[str | None] | None = None,
    ) -> Tensor:
        """Scores (B, C) of candidate texts for each image; higher is better.

        `candidates` is one list shared by every image, or one list per image (equal lengths).
        """
        raise NotImplementedError

    def generate(
        self,
        visual: Tensor,
        queries: Sequence[str | None] | None = None,
        *,
        max_len: int = 32,
        beam_size: int = 1,
    ) -> list[str]:
        """Text for each image (a caption, or the answer to its query)."""
        raise NotImplementedError

    def decode_targets(self, texts: Sequence[str]) -> list[str] | None:
        """Text recovered from the model's own representation of the true `texts`, where the
        model has an intermediate one (VL-JEPA's embeddings): the ceiling of its decoder."""
        return None

    def prepare_texts(self, texts: Sequence[str]) -> int:
        """Precomputes what the model needs of the texts it will read (cached target
        embeddings), so that training steps measure only training; returns the FLOPs that
        precomputing costs (0 where there is nothing to precompute)."""
        return 0

    def auxiliary_stage(
        self,
        texts: Sequence[str],
        examples: tuple[Tensor, Sequence[Sequence[str]]] | None = None,
        samples: int | None = None,
    ) -> AuxiliaryStage | None:
        """A part learned after the main loop (VL-JEPA's Y-decoder), which the training floor
        runs; None when the family has none. `texts` are the training targets, `examples` the
        training images' visual inputs with their captions, `samples` what the main loop saw
        (a stage sized to the budget scales with it)."""
        return None

    def prediction_cosine(self, visual: Tensor, texts: Sequence[str]) -> Tensor | None:
        """Per image (B,), the cosine between the model's prediction and its text's target
        embedding, where the model predicts embeddings (VL-JEPA); else None."""
        return None

    # --- bookkeeping ----------------------------------------------------------------------
    def frozen_pretrained_prefixes(self) -> list[str]:
        """State-dict prefixes of frozen pretrained parts: rebuilt from their packages on load,
        so checkpoints stay small."""
        return ["x_encoder."] if self.x_encoder.frozen else []

    def trainable_state_dict(self) -> dict[str, Tensor]:
        skip = tuple(self.frozen_pretrained_prefixes())
        return {k: v for k, v in self.state_dict().items() if not k.startswith(skip)}

    def count_parameters(self, trainable_only: bool = True) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def lr_multipliers(self) -> dict[str, float]:
        """Per-module learning-rate multipliers by parameter-name prefix (default: none)."""
        return {}

    def extra_state(self) -> dict[str, Any]:
        """What a checkpoint needs beyond parameters to rebuild the model (vocabularies...)."""
        return {}

    def describe(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "config": asdict(self.cfg),
            "trainable_parameters": self.count_parameters(True),
            "total_parameters": self.count_parameters(False),
        }

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device
