"""Pre-LN Transformer blocks and the encoder and decoder stacks built from them."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from vlarena.nn.attention import MultiHeadAttention
from vlarena.nn.kv_cache import KVCache, PrefixCache


def init_weights(module: nn.Module) -> None:
    """GPT-2 style init for `model.apply`: Linear and Embedding weights N(0, 0.02), biases zero."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)


class FeedForward(nn.Module):
    """Position-wise Linear -> GELU -> Linear -> Dropout."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0):
        super().__init__()
        self.fc_in = nn.Linear(d_model, d_ff)
        self.gelu = nn.GELU()
        self.fc_out = nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.fc_out(self.gelu(self.fc_in(x))))  # (B, T, d)


class EncoderBlock(nn.Module):
    """Self-attention then feed-forward, each behind a LayerNorm and added to the residual."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.0):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.ln2 = nn.LayerNorm(d_model)
        self.ff = FeedForward(d_model, d_ff, dropout)

    def forward(
        self,
        x: Tensor,
        *,
        key_padding_mask: Tensor | None = None,
        causal: bool = False,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """x (B, T, d) -> (B, T, d) and the self-attention weights (B, nh, T, T) when asked."""
        a, weights = self.attn(
            self.ln1(x), key_padding_mask=key_padding_mask, causal=causal, need_weights=need_weights
        )
        x = x + a
        x = x + self.ff(self.ln2(x))
        return x, weights


class DecoderBlock(nn.Module):
    """Causal self-attention, cross-attention to the memory, feed-forward; each pre-LN."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.0):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.ln2 = nn.LayerNorm(d_model)
        self.cross_attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.ln3 = nn.LayerNorm(d_model)
        self.ff = FeedForward(d_model, d_ff, dropout)

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        *,
        self_padding_mask: Tensor | None = None,
        memory_padding_mask: Tensor | None = None,
        cache: KVCache | None = None,
        layer: int = 0,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """x (B, T, d) over memory (B, Tmem, d) -> (B, T, d) and cross-attention weights
        (B, nh, T, Tmem) when asked."""
        a, _ = self.self_attn(
            self.ln1(x), key_padding_mask=self_padding_mask, causal=True, cache=cache, layer=layer
        )
        x = x + a
        a, weights = self.cross_attn(
            self.ln2(x),
            memory,
            key_padding_mask=memory_padding_mask,
            need_weights=need_weights,
            cache=cache,
            layer=layer,
            cross=True,
        )
        x = x + a
        x = x + self.ff(self.ln3(x))
        return x, weights

    def cross_keys_values(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        """The cross-attention k, v (B, nh, Tmem, hs) of a memory, for `forward_prefixes`."""
        attn = self.cross_attn
        return attn.heads(attn.k_proj, memory), attn.heads(attn.v_proj, memory)

    def forward_prefixes(
        self,
        x: Tensor,
        cache: PrefixCache,
        layer: int,
        cross_kv: tuple[Tensor, Tensor],
        per_memory: int,
    ) -> Tensor:
        """One new position of many prefixes at once, in eval mode: `forward` with a cache.

        x (N, 1, d) holds the next token of N prefixes, `per_memory` consecutive rows for each
        of the B = N / per_memory memories whose cross-attention k, v (B, nh, Tmem, hs) are
        `cross_kv`: each memory is attended once by all of its rows, not copied per row.
        """
        x = self.self_attend_prefixes(x, cache, layer)
        return self.attend_memory_prefixes(x, self.cross_queries(x, per_memory), cross_kv)

    def self_attend_prefixes(self, x: Tensor, cache: PrefixCache, layer: int) -> Tensor:
        """The self-attention half of `forward_prefixes`: x (N, 1, d) plus its attention over
        each row's cached prefix."""
        sa = self.self_attn
        h = self.ln1(x)
        k, v = cache.append(layer, sa.heads(sa.k_proj, h), sa.heads(sa.v_proj, h))
        # One query sees all its prefix: each row's query attends its own slot of the cache.
        q = cache.to_slots(sa.heads(sa.q_proj, h))
        return x + sa.project(cache.to_rows(F.scaled_dot_product_attention(q, k, v)))

    def cross_queries(self, x: Tensor, per_memory: int) -> Tensor:
        """The cross-attention queries (N / per_memory, nh, per_memory, hs) of x (N, 1, d)."""
        ca = self.cross_attn
        n, _, d = x.shape
        return ca.heads(ca.q_proj, self.ln2(x).view(n // per_memory, per_memory, d))

    def attend_memory_prefixes(
        self, x: Tensor, queries: Tensor, cross_kv: tuple[Tensor, Tensor]
    ) -> Tensor:
        """The rest of `forward_prefixes` after the self-attention: the cross-attention of
        `queries` (B, nh, per_memory, hs) over each memory's k, v, then the feed-forward."""
        n, _, d = x.shape
        x = x + self.cross_attn.attend(queries, *cross_kv).view(n, 1, d)
        return x + self.ff(self.ln3(x))


class TransformerEncoder(nn.Module):
    """A stack of encoder blocks and a final LayerNorm, initialised with `init_weights`."""

    def __init__(self, n_layers: int, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.0):
        super().__init__()
        self.layers = nn.ModuleList(
            EncoderBlock(d_model, n_heads, d_ff, dropout) for _ in range(n_layers)
        )
        self.ln_f = nn.LayerNorm(d_model)
        self.apply(init_weights)

    def forward(
        self,
        x: Tensor,
        *,
        key_padding_mask: Tensor | None = None,
        causal: bool = False,
        need_weights: bool = False,
    ) -> tuple[Tensor, list[Tensor] | None]:
        """x (B, T, d) -> (B, T, d) and each layer's self-attention weights when asked."""
        all_weights = []
        for block in self.layers:
            x, weights = block(
                x, key_padding_mask=key_padding_mask, causal=causal, need_weights=need_weights
            )
            all_weights.append(weights)
        return self.ln_f(x), all_weights if need_weights else None


class TransformerDecoder(nn.Module):
    """A stack of decoder blocks and a final LayerNorm, initialised with `init_weights`.

    With a cache, x holds only the new positions; the caller adds positional encodings at
    offset `cache.length`, read before this call.
    """

    def __init__(self, n_layers: int, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.0):
        super().__init__()
        self.layers = nn.ModuleList(
            DecoderBlock(d_model, n_heads, d_ff, dropout) for _ in range(n_layers)
        )
        self.ln_f = nn.LayerNorm(d_model)
        self.apply(init_weights)

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        *,
        self_padding_mask: Tensor | None = None,
        memory_padding_mask: Tensor | None = None,
        cache: KVCache | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, list[Tensor] | None]:
        """x (B, T, d) over memory (B, Tmem, d) -> (B, T, d) and each layer's cross-attention
        weights (B, nh, T, Tmem) when asked."""
        all_weights = []
        for i, block in enumerate(self.layers):
            x, weights = block(
                x,
                memory,
                self_padding_mask=self_padding_mask,
                memory_padding_mask=memory_padding_mask,
                cache=cache,
                layer=i,
                need_weights=need_weights,
            )
            all_weights.append(weights)
        return self.ln_f(x), all_weights if need_weights else None
