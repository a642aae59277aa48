"""Scaled dot-product attention (math and fused), attention masks, multi-head attention."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:
    from vlarena.nn.kv_cache import KVCache


def attention_math(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, dropout_p: float = 0.0
) -> tuple[Tensor, Tensor]:
    """softmax(q k^T / sqrt(hs)) v written out; mask is bool, True = may attend.

    Returns the output (B, h, Tq, hs) and the attention weights (B, h, Tq, Tk) before dropout.
    """
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))  # (B, h, Tq, Tk)
    if mask is not None:
        # A finite fill keeps a fully masked row finite (uniform) instead of NaN; zeroing the
        # masked weights below then turns such a row into "attends to nothing".
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    weights = scores.softmax(dim=-1)
    if mask is not None:
        weights = weights.masked_fill(~mask, 0.0)
    dropped = F.dropout(weights, dropout_p) if dropout_p > 0.0 else weights
    return dropped @ v, weights  # (B, h, Tq, hs), (B, h, Tq, Tk)


def attention_fused(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, dropout_p: float = 0.0
) -> Tensor:
    """The same attention through torch's fused kernel; returns (B, h, Tq, hs)."""
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    if mask is not None:
        # Some CUDA kernels return NaN for a query that may attend to nothing; match the math path.
        out = out.masked_fill(~mask.any(dim=-1, keepdim=True), 0.0)
    return out


def scaled_dot_product_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    dropout_p: float = 0.0,
    need_weights: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Fused attention, or the math path when the caller wants the attention weights."""
    if need_weights:
        return attention_math(q, k, v, mask, dropout_p)
    return attention_fused(q, k, v, mask, dropout_p), None


def causal_mask(
    t_q: int, t_k: int, device: torch.device | str | None = None, offset: int | None = None
) -> Tensor:
    """Bool (t_q, t_k), True where query i (at position offset + i) may see key j <= its position.

    The default offset t_k - t_q puts the queries at the end of the keys, as in cached decoding.
    """
    if offset is None:
        offset = t_k - t_q
    q_pos = torch.arange(t_q, device=device).unsqueeze(1) + offset  # (t_q, 1)
    k_pos = torch.arange(t_k, device=device).unsqueeze(0)  # (1, t_k)
    return k_pos <= q_pos


def padding_mask(key_padding_mask: Tensor) -> Tensor:
    """(B, Tk) bool with True = padding -> attention mask (B, 1, 1, Tk) with True = may attend."""
    return ~key_padding_mask[:, None, None, :]


class MultiHeadAttention(nn.Module):
    """Multi-head self- or cross-attention with an optional KV cache for incremental decoding.

    Dropout applies to the attention weights and to the output projection, as in nanoGPT.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.n_heads = n_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)

    def _split_heads(self, x: Tensor) -> Tensor:
        B, T, C = x.shape
        return x.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)  # (B, nh, T, hs)

    def _keys_values(
        self, x: Tensor, context: Tensor | None, cache: KVCache | None, layer: int, cross: bool
    ) -> tuple[Tensor, Tensor]:
        """k, v (B, nh, Tk, hs) projected from x or the context, read from or added to the cache."""
        if cross and cache is not None and (cached := cache.cross(layer)) is not None:
            return cached
        if cross and context is None:
            raise ValueError(f"cross-attention layer {layer} has no context and nothing cached")
        if cache is not None and context is not None and not cross:
            raise ValueError("with a cache, cross-attention over a context must pass cross=True")
        source = x if context is None else context
        k, v = self._split_heads(self.k_proj(source)), self._split_heads(self.v_proj(source))
        if cache is None:
            return k, v
        if cross:
            cache.set_cross(layer, k, v)
            return k, v
        return cache.append(layer, k, v)

    def heads(self, proj: nn.Linear, x: Tensor) -> Tensor:
        """`proj(x)` (B, T, C) split into heads (B, nh, T, hs); proj is one of the q/k/v layers."""
        return self._split_heads(proj(x))

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Heads q (B, nh, Tq, hs) over every key of k, v (B, nh, Tk, hs), no mask and no
        dropout, through the output projection: (B, Tq, C)."""
        return self.project(F.scaled_dot_product_attention(q, k, v))

    def project(self, y: Tensor) -> Tensor:
        """Heads' outputs y (B, nh, T, hs) merged and through the output projection: (B, T, C)."""
        B, _, T, _ = y.shape
        return self.out_proj(y.transpose(1, 2).reshape(B, T, -1))

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        *,
        key_padding_mask: Tensor | None = None,
        causal: bool = False,
        need_weights: bool = False,
        cache: KVCache | None = None,
        layer: int = 0,
        cross: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """x (B, Tq, C) attends over itself, or over context (B, Tk, C) when given.

        key_padding_mask (B, Tk) is True at padded keys; with a self-attention cache Tk counts every
        cached position plus the new ones. Returns (B, Tq, C) and the weights (B, nh, Tq, Tk) when
        need_weights, else None.
        """
        B, T, C = x.shape
        q = self._split_heads(self.q_proj(x))  # (B, nh, Tq, hs)
        k, v = self._keys_values(x, context, cache, layer, cross)  # (B, nh, Tk, hs)
        mask = None
        if causal:
            # The default offset places the new queries after every cached key.
            mask = causal_mask(T, k.size(2), device=x.device)
        if key_padding_mask is not None:
            pad = padding_mask(key_padding_mask)
            mask = pad if mask is None else mask & pad
        dropout_p = self.dropout if self.training else 0.0
        y, weights = scaled_dot_product_attention(q, k, v, mask, dropout_p, need_weights)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, Tq, C)
        return self.resid_dropout(self.out_proj(y)), weights
