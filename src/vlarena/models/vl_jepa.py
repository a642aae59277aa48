"""VL-JEPA (Chen et al., arXiv 2512.10942): predict the embedding of the target text instead of
its tokens. X-encoder → projector → bidirectional predictor over [visual; query] tokens → mean
→ head, against a MiniLM Y-encoder + head, with bidirectional InfoNCE. A small Y-decoder turns
embeddings into text only when text is asked for."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, cast, overload

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlarena.data.locations import cache_dir
from vlarena.data.tokenizer import Vocabulary
from vlarena.models.base import AuxiliaryStage, Batch, VLModel
from vlarena.models.losses import InfoNCE
from vlarena.models.text_decoder import TextDecoder
from vlarena.models.token_vlm import Projector
from vlarena.models.x_encoders import XEncoder, XEncoderConfig, build_x_encoder
from vlarena.models.y_encoder import EmbeddingCache, MiniLM
from vlarena.nn import LearnedPositionalEncoding, TransformerEncoder, init_weights


@dataclass
class VLJEPAConfig:
    x_encoder: XEncoderConfig = field(default_factory=XEncoderConfig)
    d_model: int = 256
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int = 1024
    dropout: float = 0.1
    embed_dim: int = 256  # the shared space of predictions and targets
    # Learning-rate multiplier of the MiniLM Y-encoder: the paper's 0.05, or 0 to freeze it
    # (its embeddings are then computed once per text and cached: the default on CPU).
    y_lr_mult: float = 0.0
    temperature: float = 0.07
    max_logit_scale: float = 100.0
    max_query_len: int = 32
    # the Y-decoder (embedding → text)
    decoder_d_model: int = 256
    decoder_layers: int = 2
    decoder_heads: int = 4
    decoder_d_ff: int = 1024
    decoder_prefix: int = 4  # memory vectors the embedding is expanded into
    decoder_samples: int = 20000
    decoder_batch_size: int = 64
    decoder_lr: float = 1e-3
    decoder_noise: float = 0.1  # noise on target embeddings, so predicted ones decode too
    max_text_len: int = 64


def text_ids(texts: Sequence[str]) -> Tensor:
    """A 63-bit id per text, equal for equal texts (marks duplicate targets in a batch)."""
    return torch.tensor(
        [
            int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "little") >> 1
            for t in texts
        ]
    )


class YEncoder(nn.Module):
    """MiniLM (frozen with cached outputs, or trained at a small learning rate) + linear head."""

    def __init__(self, embed_dim: int, trainable: bool) -> None:
        super().__init__()
        self.backbone = MiniLM()
        self.trainable = trainable
        self.backbone.requires_grad_(trainable)
        self.head = nn.Linear(MiniLM.out_dim, embed_dim)
        init_weights(self.head)
        self.cache = EmbeddingCache(cache_dir() / "text-embeddings.sqlite")

    def train(self, mode: bool = True) -> YEncoder:
        super().train(mode)
        if not self.trainable:
            self.backbone.eval()  # frozen: no dropout, so cached outputs are exact
        return self

    def pooled(self, texts: Sequence[str]) -> Tensor:
        """MiniLM sentence embeddings (B, 384), through the cache when frozen."""
        if self.trainable:
            return self.backbone(texts)
        return self.cache.lookup(texts, self.backbone).to(self.head.weight.device)

    def forward(self, texts: Sequence[str]) -> Tensor:
        return self.head(self.pooled(texts))  # (B, D)


class YDecoder(nn.Module):
    """A small prefix decoder: an embedding becomes `prefix` memory vectors for a TextDecoder."""

    def __init__(self, cfg: VLJEPAConfig, vocab: Vocabulary) -> None:
        super().__init__()
        self.prefix_len, d = cfg.decoder_prefix, cfg.decoder_d_model
        self.prefix = nn.Linear(cfg.embed_dim, cfg.decoder_prefix * d)
        self.pos = LearnedPositionalEncoding(d, cfg.decoder_prefix)
        init_weights(self.prefix)
        self.text = TextDecoder(
            vocab, d, cfg.decoder_layers, cfg.decoder_heads, cfg.decoder_d_ff, 0.0, cfg.max_text_len
        )

    def memory(self, embedding: Tensor) -> Tensor:
        e = F.normalize(embedding, dim=-1)
        return self.pos(self.prefix(e).view(e.shape[0], self.prefix_len, -1))  # (B, P, d)


class VLJEPA(VLModel):
    family = "vl-jepa"

    def __init__(self, cfg: VLJEPAConfig, vocab: Vocabulary, x_encoder: XEncoder | None = None):
        super().__init__()
        self.cfg = cfg
        self.vocab = vocab
        self.x_encoder = x_encoder or build_x_encoder(cfg.x_encoder)
        d = cfg.d_model
        self.projector = Projector(self.x_encoder.out_dim, d, self.x_encoder.num_tokens)
        self.query_emb = nn.Embedding(len(vocab), d)
        self.query_pos = LearnedPositionalEncoding(d, cfg.max_query_len)
        self.predictor = TransformerEncoder(cfg.n_layers, d, cfg.n_heads, cfg.d_ff, cfg.dropout)
        self.pred_head = nn.Linear(d, cfg.embed_dim)
        for m in (self.query_emb, self.pred_head):
            init_weights(m)
        self.y_encoder = YEncoder(cfg.embed_dim, trainable=cfg.y_lr_mult > 0)
        self.loss_fn = InfoNCE(cfg.temperature, cfg.max_logit_scale)
        self.y_decoder = YDecoder(cfg, vocab)
        # The Y-decoder learns after the predictor (train_auxiliary), from target embeddings.
        self.y_decoder.requires_grad_(False)

    # --- the predictor ------------------------------------------------------------------------
    def _queries(
        self, queries: Sequence[str | None], device: torch.device
    ) -> tuple[Tensor, Tensor]:
        """Query token ids (B, Tq) and their padding mask (True = pad); Tq may be 0."""
        ids = [
            self.vocab.encode(q, bos=False, eos=False)[: self.cfg.max_query_len] if q else []
            for q in queries
        ]
        width = max(map(len, ids), default=0)
        out = torch.full((len(ids), width), self.vocab.pad_id, dtype=torch.long)
        for i, row in enumerate(ids):
            out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        return out.to(device), (out == self.vocab.pad_id).to(device)

    @overload
    def predict_embedding(
        self,
        visual: Tensor,
        queries: Sequence[str | None] | None = None,
        *,
        need_weights: Literal[False] = False,
    ) -> Tensor: ...

    @overload
    def predict_embedding(
        self,
        visual: Tensor,
        queries: Sequence[str | None] | None = None,
        *,
        need_weights: Literal[True],
    ) -> tuple[Tensor, list[Tensor]]: ...

    def predict_embedding(
        self,
        visual: Tensor,
        queries: Sequence[str | None] | None = None,
        *,
        need_weights: bool = False,
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        """Predicted target embeddings (B, D), unnormalised; with `need_weights`, also the
        predictor's per-layer self-attention (B, h, T, T) over [visual; query] tokens."""
        feats = visual if self.x_encoder.frozen else self.x_encoder(visual)
        v = self.projector(feats)  # (B, Nv, d)
        b, nv = v.shape[:2]
        q_ids, q_pad = self._queries(queries or [None] * b, v.device)
        tokens = torch.cat([v, self.query_pos(self.query_emb(q_ids))], 1)  # (B, Nv+Tq, d)
        pad = torch.cat([torch.zeros(b, nv, dtype=torch.bool, device=v.device), q_pad], 1)
        h, weights = self.predictor(tokens, key_padding_mask=pad, need_weights=need_weights)
        keep = (~pad).unsqueeze(-1).to(h.dtype)
        pooled = (h * keep).sum(1) / keep.sum(1)  # mean over non-padding positions
        out = self.pred_head(pooled)
        return (out, weights) if need_weights else out

    def encode_text(self, texts: Sequence[str]) -> Tensor:
        """Target embeddings (B, D), unnormalised."""
        return self.y_encoder(texts)

    # --- training -----------------------------------------------------------------------------
    def make_batch(
        self, visual: Tensor, texts: Sequence[str], queries: Sequence[str | None] | None = None
    ) -> Batch:
        return {
            "visual": visual,
            "texts": list(texts),
            "queries": list(queries or [None] * len(texts)),
            "text_ids": text_ids(texts).to(visual.device),
        }

    def loss(self, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        pred = self.predict_embedding(batch["visual"], batch["queries"])
        target = self.encode_text(batch["texts"])
        return self.loss_fn(pred, target, batch["text_ids"])

    def prepare_texts(self, texts: Sequence[str]) -> None:
        if not self.y_encoder.trainable:
            distinct = list(dict.fromkeys(texts))
            for s in range(0, len(distinct), 1024):
                self.y_encoder.pooled(distinct[s : s + 1024])

    def lr_multipliers(self) -> dict[str, float]:
        return {"y_encoder.backbone.": self.cfg.y_lr_mult}

    def frozen_pretrained_prefixes(self) -> list[str]:
        prefixes = super().frozen_pretrained_prefixes()
        return prefixes + ([] if self.y_encoder.trainable else ["y_encoder.backbone."])

    # --- verbs -------------------------------------------------------------------------------------
    @torch.no_grad()
    def score_candidates(
        self,
        visual: Tensor,
        candidates: Sequence[str] | Sequence[Sequence[str]],
        queries: Sequence[str | None] | None = None,
    ) -> Tensor:
        """Cosine between the predicted embedding and each candidate's Y-embedding."""
        pred = F.normalize(self.predict_embedding(visual, queries), dim=-1)  # (B, D)
        if isinstance(candidates[0], str):
            shared = cast(Sequence[str], candidates)
            cand = F.normalize(self.encode_text(shared), dim=-1)  # (C, D)
            return pred @ cand.T
        flat = [c for row in candidates for c in row]
        cand = F.normalize(self.encode_text(flat), dim=-1).view(len(candidates), -1, pred.shape[1])
        return torch.einsum("bd,bcd->bc", pred, cand)

    @torch.no_grad()
    def generate(
        self,
        visual: Tensor,
        queries: Sequence[str | None] | None = None,
        *,
        max_len: int = 32,
        beam_size: int = 1,
    ) -> list[str]:
        """Text decoded by the Y-decoder from the predicted embedding."""
        return self.decode_embeddings(self.predict_embedding(visual, queries), max_len, beam_size)

    @torch.no_grad()
    def decode_embeddings(
        self, embeddings: Tensor, max_len: int = 32, beam_size: int = 1
    ) -> list[str]:
        texts, _ = self.y_decoder.text.generate(
            self.y_decoder.memory(embeddings), max_len=max_len, beam_size=beam_size
        )
        return texts

    # --- the Y-decoder -----------------------------------------------------------------------
    def auxiliary_stage(self, texts: Sequence[str]) -> AuxiliaryStage:
        """The Y-decoder, learned from target embeddings of the training texts (with noise, so
        predicted embeddings decode too) to the texts."""
        cfg = self.cfg
        distinct = sorted(set(texts))
        device = self.device
        with torch.no_grad():
            targets = torch.cat(
                [self.encode_text(distinct[s : s + 512]) for s in range(0, len(distinct), 512)]
            ).to(device)
        dec = self.y_decoder

        def loss(gen: torch.Generator) -> Tensor:
            idx = torch.randint(len(distinct), (cfg.decoder_batch_size,), generator=gen)
            emb = F.normalize(targets[idx.to(device)], dim=-1)
            emb = (
                emb
                + cfg.decoder_noise
                * torch.randn(emb.shape, generator=gen).to(device)
                / emb.shape[1] ** 0.5
            )
            inputs, labels = dec.text.sequences([distinct[i] for i in idx.tolist()], device=device)
            return dec.text.loss(inputs, labels, dec.memory(emb))

        steps = max(1, cfg.decoder_samples // cfg.decoder_batch_size)
        return AuxiliaryStage(
            name="ydecoder",
            module=dec,
            loss=loss,
            steps=steps,
            batch_size=cfg.decoder_batch_size,
            learning_rate=cfg.decoder_lr,
            texts=len(distinct),
            warmup_steps=min(100, steps // 10),
        )

    @torch.no_grad()
    def decode_targets(self, texts: Sequence[str]) -> list[str]:
        """The Y-decoder's reading of the true texts' target embeddings: its own ceiling."""
        emb = self.encode_text(texts)
        return [
            h for s in range(0, len(texts), 256) for h in self.decode_embeddings(emb[s : s + 256])
        ]

    def extra_state(self) -> dict:
        return {"vocab": self.vocab.to_dict()}
