"""Positional encodings added to token embeddings: fixed sinusoidal and learned."""

import math

import torch
from torch import Tensor, nn


def _check_range(offset: int, length: int, max_len: int) -> None:
    if offset < 0 or offset + length > max_len:
        raise ValueError(
            f"positions {offset}..{offset + length - 1} are outside 0..{max_len - 1}; "
            f"raise max_len (now {max_len})"
        )


class SinusoidalPositionalEncoding(nn.Module):
    """PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(pos / 10000^(2i/d)) (Vaswani)."""

    pe: Tensor  # (max_len, d), a buffer

    def __init__(self, d_model: int, max_len: int = 512):
        super().__init__()
        self.max_len = max_len
        pos = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)  # (max_len, 1)
        inv_freq = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
        angles = pos * inv_freq  # (max_len, ceil(d/2))
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2] = torch.sin(angles)
        pe[:, 1::2] = torch.cos(angles[:, : d_model // 2])
        # Not persistent: it is a function of the shape, so checkpoints need not carry it.
        self.register_buffer("pe", pe, persistent=False)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        """x (B, T, d) + the encoding of positions offset..offset+T-1."""
        T = x.size(1)
        _check_range(offset, T, self.max_len)
        return x + self.pe[offset : offset + T].to(x.dtype)  # (B, T, d)


class LearnedPositionalEncoding(nn.Module):
    """One learned vector per position, initialised N(0, 0.02)."""

    def __init__(self, d_model: int, max_len: int = 512):
        super().__init__()
        self.max_len = max_len
        self.embedding = nn.Embedding(max_len, d_model)
        nn.init.normal_(self.embedding.weight, std=0.02)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        """x (B, T, d) + the embeddings of positions offset..offset+T-1."""
        T = x.size(1)
        _check_range(offset, T, self.max_len)
        positions = torch.arange(offset, offset + T, device=x.device)
        return x + self.embedding(positions).to(x.dtype)  # (B, T, d)
