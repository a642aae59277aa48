"""Transformer building blocks written from scratch: attention, positions, blocks, KV cache."""

from vlarena.nn.attention import (
    MultiHeadAttention,
    attention_fused,
    attention_math,
    causal_mask,
    padding_mask,
    scaled_dot_product_attention,
)
from vlarena.nn.blocks import (
    DecoderBlock,
    EncoderBlock,
    FeedForward,
    TransformerDecoder,
    TransformerEncoder,
    init_weights,
)
from vlarena.nn.kv_cache import KVCache, PrefixCache
from vlarena.nn.positional import LearnedPositionalEncoding, SinusoidalPositionalEncoding

__all__ = [
    "DecoderBlock",
    "EncoderBlock",
    "FeedForward",
    "KVCache",
    "LearnedPositionalEncoding",
    "MultiHeadAttention",
    "PrefixCache",
    "SinusoidalPositionalEncoding",
    "TransformerDecoder",
    "TransformerEncoder",
    "attention_fused",
    "attention_math",
    "causal_mask",
    "init_weights",
    "padding_mask",
    "scaled_dot_product_attention",
]
