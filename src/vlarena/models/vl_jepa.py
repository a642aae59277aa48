"""VL-JEPA (Chen et al., arXiv 2512.10942): predict the embedding of the target text instead of
its tokens. X-encoder → projector → bidirectional predictor over [visual; query] tokens → mean
→ head, against a Y-encoder + head (pretrained MiniLM, or a text encoder trained from scratch),
with bidirectional InfoNCE. A small Y-decoder turns embeddings into text only when text is
asked for."""

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
from vlarena.models.base import TEXT_PRIORS, AuxiliaryStage, Batch, VLModel
from vlarena.models.errors import ConfigError
from vlarena.models.losses import InfoNCE
from vlarena.models.text_decoder import TextDecoder
from vlarena.models.token_vlm import Projector
from vlarena.models.x_encoders import XEncoder, XEncoderConfig, build_x_encoder
from vlarena.models.y_encoder import EmbeddingCache, MiniLM, ScratchTextEncoder
from vlarena.nn import LearnedPositionalEncoding, TransformerEncoder, init_weights
from vlarena.nn.flops import count_flops


@dataclass
class VLJEPAConfig:
    x_encoder: XEncoderConfig = field(default_factory=XEncoderConfig)
    d_model: int = 256
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int = 1024
    dropout: float = 0.1
    embed_dim: int = 256  # the shared space of predictions and targets
    # "pretrained": targets from MiniLM; "scratch": from a text encoder of this config's size,
    # randomly initialised and trained with the predictor (the token VLM's default prior).
    text_prior: str = "pretrained"
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
    # Samples the Y-decoder learns from; None: as many as the predictor saw (its budget).
    decoder_samples: int | None = None
    decoder_batch_size: int = 64
    decoder_lr: float = 1e-3
    # Share of each Y-decoder batch taken from the predictor's own embeddings of training images
    # (what it decodes at test time); the rest are target embeddings of all training texts
    # with noise, which teach it every text, answers included.
    decoder_prediction_share: float = 0.5
    decoder_noise: float = 0.1  # noise on target embeddings, so predicted ones decode too
    max_text_len: int = 64

    def __post_init__(self) -> None:
        if self.text_prior not in TEXT_PRIORS:
            raise ConfigError(
                "model.config.text_prior",
                f"text_prior must be one of {', '.join(TEXT_PRIORS)}, got {self.text_prior!r}",
            )
        if not 0.0 <= self.decoder_prediction_share <= 1.0:
            raise ConfigError(
                "model.config.decoder_prediction_share",
                f"must be in [0, 1], got {self.decoder_prediction_share}",
            )
        if self.text_prior == "scratch" and self.y_lr_mult:
            raise ConfigError(
                "model.config.y_lr_mult",
                "applies to the pretrained MiniLM Y-encoder; a scratch Y-encoder trains at the "
                "full learning rate (leave y_lr_mult out)",
            )


# Y-decoder samples when the main loop's count is unknown (an auxiliary stage built alone).
DEFAULT_DECODER_SAMPLES = 20000


def text_ids(texts: Sequence[str]) -> Tensor:
    """A 63-bit id per text, equal for equal texts (marks duplicate targets in a batch)."""
    return torch.tensor(
        [
            int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "little") >> 1
            for t in texts
        ]
    )


class YEncoder(nn.Module):
    """A text backbone + linear head: MiniLM (frozen with cached outputs, or trained at a small
    learning rate) or a `ScratchTextEncoder` (trained at the full rate)."""

    def __init__(self, embed_dim: int, backbone: MiniLM | ScratchTextEncoder, trainable: bool):
        super().__init__()
        self.backbone = backbone
        self.pretrained = isinstance(backbone, MiniLM)
        self.trainable = trainable or not self.pretrained
        self.backbone.requires_grad_(self.trainable)
        self.head = nn.Linear(backbone.out_dim, embed_dim)
        init_weights(self.head)
        self.cache = EmbeddingCache(cache_dir() / "text-embeddings.sqlite")

    def train(self, mode: bool = True) -> YEncoder:
        super().train(mode)
        if not self.trainable:
            self.backbone.eval()  # frozen: no dropout, so cached outputs are exact
        return self

    def pooled(self, texts: Sequence[str]) -> Tensor:
        """The backbone's sentence embeddings (B, E), through the cache when frozen."""
        if self.trainable or not isinstance(self.backbone, MiniLM):
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
        backbone = (
            MiniLM()
            if cfg.text_prior == "pretrained"
            else ScratchTextEncoder(
                vocab, d, cfg.n_layers, cfg.n_heads, cfg.d_ff, cfg.dropout, cfg.max_text_len
            )
        )
        self.y_encoder = YEncoder(cfg.embed_dim, backbone, trainable=cfg.y_lr_mult > 0)
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

    def prepare_texts(self, texts: Sequence[str]) -> int:
        """Encodes each distinct target once with the frozen Y-encoder (through its cache);
        returns the FLOPs that costs, counted even for texts the cache already held, so a
        run's cost does not depend on what ran before it. A trained Y-encoder encodes its
        targets in each training step, counted there: 0."""
        if self.y_encoder.trainable:
            return 0
        distinct = list(dict.fromkeys(texts))
        for s in range(0, len(distinct), 1024):
            self.y_encoder.pooled(distinct[s : s + 1024])
        backbone = self.y_encoder.backbone
        assert isinstance(backbone, MiniLM)
        return backbone.encoding_flops(distinct)

    def lr_multipliers(self) -> dict[str, float]:
        return {"y_encoder.backbone.": self.cfg.y_lr_mult} if self.y_encoder.pretrained else {}

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
        # Each distinct text is encoded once: rows often share candidates (a retrieval pool is
        # every row's), which a Y-encoder that is trained, so not cached, would encode per row.
        flat = [c for row in candidates for c in row]
        index = {text: i for i, text in enumerate(dict.fromkeys(flat))}
        distinct = F.normalize(self.encode_text(list(index)), dim=-1)
        rows = torch.tensor([index[text] for text in flat], device=distinct.device)
        cand = distinct[rows].view(len(candidates), -1, pred.shape[1])
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
    def auxiliary_stage(
        self,
        texts: Sequence[str],
        examples: tuple[Tensor, Sequence[Sequence[str]]] | None = None,
        samples: int | None = None,
    ) -> AuxiliaryStage:
        """The Y-decoder. Each batch mixes the predictor's embeddings of training images with
        one of their captions (`decoder_prediction_share` of it: what the decoder reads at test
        time) and target embeddings of every training text with noise (the rest). It learns
        from as many samples as the predictor saw unless `decoder_samples` says otherwise."""
        cfg = self.cfg
        distinct = sorted(set(texts))
        device = self.device
        with torch.no_grad():
            targets = torch.cat(
                [self.encode_text(distinct[s : s + 512]) for s in range(0, len(distinct), 512)]
            ).to(device)
        rows, predicted, prepare_flops = self._predicted_examples(examples)
        share = round(cfg.decoder_batch_size * cfg.decoder_prediction_share) if rows else 0
        dec = self.y_decoder

        def loss(gen: torch.Generator) -> Tensor:
            idx = torch.randint(len(distinct), (cfg.decoder_batch_size - share,), generator=gen)
            emb = F.normalize(targets[idx.to(device)], dim=-1)
            emb = (
                emb
                + cfg.decoder_noise
                * torch.randn(emb.shape, generator=gen).to(device)
                / emb.shape[1] ** 0.5
            )
            out = [distinct[i] for i in idx.tolist()]
            if share:
                picks = torch.randint(len(rows), (share,), generator=gen).tolist()
                choice = torch.randint(1 << 30, (share,), generator=gen).tolist()
                emb = torch.cat([emb, predicted[picks].to(device)])
                for k, c in zip(picks, choice, strict=True):
                    captions = rows[k]
                    out.append(captions[c % len(captions)])
            inputs, labels = dec.text.sequences(out, device=device)
            return dec.text.loss(inputs, labels, dec.memory(emb))

        wanted = cfg.decoder_samples or samples or DEFAULT_DECODER_SAMPLES
        steps = max(1, wanted // cfg.decoder_batch_size)
        return AuxiliaryStage(
            name="ydecoder",
            module=dec,
            loss=loss,
            steps=steps,
            batch_size=cfg.decoder_batch_size,
            learning_rate=cfg.decoder_lr,
            texts=len(distinct),
            warmup_steps=min(100, steps // 10),
            prepare_flops=prepare_flops,
        )

    @torch.no_grad()
    def _predicted_examples(
        self, examples: tuple[Tensor, Sequence[Sequence[str]]] | None
    ) -> tuple[list[Sequence[str]], Tensor, int]:
        """The captions of training images that have some, the predictor's normalised
        embeddings of those images (N, D), and the FLOPs spent predicting them."""
        if examples is None or self.cfg.decoder_prediction_share == 0:
            return [], torch.zeros(0), 0
        visual, captions = examples
        keep = [i for i, cs in enumerate(captions) if cs]
        if not keep:
            return [], torch.zeros(0), 0
        was_training = self.training
        self.eval()
        chosen = visual[keep]

        def predict() -> Tensor:
            return torch.cat(
                [
                    self.predict_embedding(chosen[s : s + 256].to(self.device))
                    for s in range(0, len(chosen), 256)
                ]
            )

        predicted, flops = count_flops(predict)
        self.train(was_training)
        return [captions[i] for i in keep], F.normalize(predicted, dim=-1), flops

    @torch.no_grad()
    def prediction_cosine(self, visual: Tensor, texts: Sequence[str]) -> Tensor:
        """Cosine between the predicted embedding of each image and its text's target (B,)."""
        pred = torch.cat(
            [
                self.predict_embedding(visual[s : s + 256].to(self.device))
                for s in range(0, len(visual), 256)
            ]
        )
        target = torch.cat(
            [self.encode_text(texts[s : s + 256]) for s in range(0, len(texts), 256)]
        ).to(pred.device)
        return F.cosine_similarity(pred, target, dim=-1).cpu()

    @torch.no_grad()
    def decode_targets(self, texts: Sequence[str]) -> list[str]:
        """The Y-decoder's reading of the true texts' target embeddings: its own ceiling."""
        emb = self.encode_text(texts)
        return [
            h for s in range(0, len(texts), 256) for h in self.decode_embeddings(emb[s : s + 256])
        ]

    def extra_state(self) -> dict:
        return {"vocab": self.vocab.to_dict()}
