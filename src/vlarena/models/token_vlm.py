"""The token-prediction VLM: X-encoder → projector → Transformer decoder generating text tokens."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, overload

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlarena.data.tokenizer import Vocabulary
from vlarena.models.base import TEXT_PRIORS, Batch, VLModel
from vlarena.models.errors import ConfigError
from vlarena.models.text_decoder import TextDecoder
from vlarena.models.x_encoders import XEncoder, XEncoderConfig, build_x_encoder
from vlarena.models.y_encoder import minilm_word_embeddings, pca_embeddings
from vlarena.nn import LearnedPositionalEncoding, init_weights


@dataclass
class TokenVLMConfig:
    x_encoder: XEncoderConfig = field(default_factory=XEncoderConfig)
    d_model: int = 256
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int = 1024
    dropout: float = 0.1
    # "scratch": token embeddings drawn at random; "pretrained": MiniLM's word-piece table
    # projected to d_model by PCA, tied to the output layer (VL-JEPA's default prior is MiniLM).
    text_prior: str = "scratch"
    # "captions": only the WordPiece ids the training texts use; "full": all 30,522 (the
    # default of the pretrained prior, so unseen words keep their pretrained embedding). The
    # full vocabulary's embedding and output layers dominate a small model's size and cost.
    vocabulary: str | None = None
    max_text_len: int = 64
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        if self.text_prior not in TEXT_PRIORS:
            raise ConfigError(
                "model.config.text_prior",
                f"text_prior must be one of {', '.join(TEXT_PRIORS)}, got {self.text_prior!r}",
            )
        if self.vocabulary is None:
            self.vocabulary = "full" if self.text_prior == "pretrained" else "captions"


class Projector(nn.Module):
    """X-encoder tokens (B, T, C) → model width (B, T, d), with a position per visual token."""

    def __init__(self, in_dim: int, d_model: int, num_tokens: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(in_dim)
        self.fc1 = nn.Linear(in_dim, d_model)
        self.fc2 = nn.Linear(d_model, d_model)
        self.pos = LearnedPositionalEncoding(d_model, num_tokens)
        self.apply(init_weights)

    def forward(self, x: Tensor) -> Tensor:
        return self.pos(self.fc2(F.gelu(self.fc1(self.norm(x)))))  # (B, T, d)


class TokenVLM(VLModel):
    """Encoder–decoder: the decoder self-attends causally over text tokens and cross-attends
    to the projected visual tokens; trained with cross-entropy on the next token."""

    family = "token-vlm"

    def __init__(self, cfg: TokenVLMConfig, vocab: Vocabulary, x_encoder: XEncoder | None = None):
        super().__init__()
        self.cfg = cfg
        self.vocab = vocab  # the decoder's own, shared
        self.x_encoder = x_encoder or build_x_encoder(cfg.x_encoder)
        self.projector = Projector(self.x_encoder.out_dim, cfg.d_model, self.x_encoder.num_tokens)
        self.text = TextDecoder(
            vocab, cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.d_ff, cfg.dropout, cfg.max_text_len
        )
        if cfg.text_prior == "pretrained":
            self.text.lm_head.weight = self.text.tok_emb.weight  # tied: (V, d) both ways

    def apply_text_prior(self) -> None:
        """Initialises a new model's token embeddings from its prior: under "pretrained", the
        rows of its vocabulary in MiniLM's word-piece table, PCA-projected to d_model (fitted on
        the whole table) at the scale of the random init they replace."""
        if self.cfg.text_prior != "pretrained":
            return
        table = pca_embeddings(minilm_word_embeddings(), self.cfg.d_model, std=0.02)
        with torch.no_grad():
            self.text.tok_emb.weight.copy_(table[list(self.vocab.wordpiece_ids)])

    def memory(self, visual: Tensor) -> Tensor:
        """Projected visual tokens (B, Nv, d) that the decoder cross-attends to."""
        feats = visual if self.x_encoder.frozen else self.x_encoder(visual)
        return self.projector(feats)

    def make_batch(
        self, visual: Tensor, texts: Sequence[str], queries: Sequence[str | None] | None = None
    ) -> Batch:
        inputs, labels = self.text.sequences(texts, queries, visual.device)
        return {"visual": visual, "inputs": inputs, "labels": labels}

    def loss(self, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        memory = self.memory(batch["visual"])
        return self.text.loss(
            batch["inputs"], batch["labels"], memory, self.cfg.label_smoothing
        ), {}

    @torch.no_grad()
    def score_candidates(
        self,
        visual: Tensor,
        candidates: Sequence[str] | Sequence[Sequence[str]],
        queries: Sequence[str | None] | None = None,
    ) -> Tensor:
        """Mean token log-likelihood of each candidate (the paper's zero-shot protocol)."""
        return self.text.score(self.memory(visual), candidates, queries)

    @overload
    def generate(
        self,
        visual: Tensor,
        queries: Sequence[str | None] | None = None,
        *,
        max_len: int = 32,
        beam_size: int = 1,
        return_attention: Literal[False] = False,
    ) -> list[str]: ...
    @overload
    def generate(
        self,
        visual: Tensor,
        queries: Sequence[str | None] | None = None,
        *,
        max_len: int = 32,
        beam_size: int = 1,
        return_attention: Literal[True],
    ) -> tuple[list[str], list[Tensor]]: ...
    @overload
    def generate(
        self,
        visual: Tensor,
        queries: Sequence[str | None] | None = None,
        *,
        max_len: int = 32,
        beam_size: int = 1,
        return_attention: bool = False,
    ) -> list[str] | tuple[list[str], list[Tensor]]: ...
    @torch.no_grad()
    def generate(
        self,
        visual: Tensor,
        queries: Sequence[str | None] | None = None,
        *,
        max_len: int = 32,
        beam_size: int = 1,
        return_attention: bool = False,
    ) -> list[str] | tuple[list[str], list[Tensor]]:
        """Greedy or beam decoding; with `return_attention`, also each generated token's
        cross-attention over the visual tokens (T, Nv) per image."""
        texts, attn = self.text.generate(
            self.memory(visual),
            queries,
            max_len=max_len,
            beam_size=beam_size,
            return_attention=return_attention,
        )
        if not return_attention:
            return texts
        assert attn is not None  # the decoder returns the maps when asked for them
        return texts, attn

    def extra_state(self) -> dict:
        return {"vocab": self.vocab.to_dict()}
