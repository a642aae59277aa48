"""Scaled dot-product attention and MultiHeadAttention agree with torch's own implementations."""

import pytest
import torch
from torch import nn

from vlarena.nn import (
    KVCache,
    MultiHeadAttention,
    attention_fused,
    attention_math,
    causal_mask,
    padding_mask,
    scaled_dot_product_attention,
)

B, H, TQ, TK, HS = 2, 4, 5, 7, 8
D = H * HS


def _qkv() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return (
        torch.randn(B, H, TQ, HS, generator=g),
        torch.randn(B, H, TK, HS, generator=g),
        torch.randn(B, H, TK, HS, generator=g),
    )


def _key_padding() -> torch.Tensor:
    pad = torch.zeros(B, TK, dtype=torch.bool)
    pad[1, -3:] = True  # padding at the end keeps every causal row with a key to attend to
    return pad


MASKS = {
    "none": None,
    "causal": causal_mask(TQ, TK),
    "padding": padding_mask(_key_padding()),
    "causal_and_padding": causal_mask(TQ, TK) & padding_mask(_key_padding()),
}


@pytest.mark.parametrize("mask_name", MASKS)
def test_math_path_equals_fused_kernel(mask_name: str) -> None:
    q, k, v = _qkv()
    mask = MASKS[mask_name]
    out, weights = attention_math(q, k, v, mask)
    torch.testing.assert_close(out, attention_fused(q, k, v, mask), atol=1e-5, rtol=0)
    assert weights.shape == (B, H, TQ, TK)
    torch.testing.assert_close(weights.sum(-1), torch.ones(B, H, TQ))


def test_fully_masked_rows_give_zeros_not_nan() -> None:
    q, k, v = _qkv()
    mask = torch.ones(B, 1, TQ, TK, dtype=torch.bool)
    mask[0, :, 2] = False
    out, weights = attention_math(q, k, v, mask)
    fused = attention_fused(q, k, v, mask)
    for result in (out, weights, fused):
        assert not result.isnan().any()
        assert (result[0, :, 2] == 0).all()


def test_weights_are_asked_for_or_skipped() -> None:
    q, k, v = _qkv()
    out, weights = scaled_dot_product_attention(q, k, v, need_weights=True)
    fused, none = scaled_dot_product_attention(q, k, v)
    assert none is None
    assert weights is not None
    torch.testing.assert_close(out, fused, atol=1e-5, rtol=0)


def test_dropout_changes_output_but_returned_weights_are_before_dropout() -> None:
    q, k, v = _qkv()
    torch.manual_seed(0)
    dropped, weights = attention_math(q, k, v, dropout_p=0.5)
    clean, clean_weights = attention_math(q, k, v)
    torch.testing.assert_close(weights, clean_weights)
    assert not torch.allclose(dropped, clean)


def test_causal_mask_lets_each_query_see_keys_up_to_its_position() -> None:
    assert causal_mask(3, 3).tolist() == [
        [True, False, False],
        [True, True, False],
        [True, True, True],
    ]
    # Queries at the end of the keys by default, as when decoding with a cache.
    assert causal_mask(1, 4).tolist() == [[True, True, True, True]]
    assert causal_mask(2, 4, offset=0).tolist() == [
        [True, False, False, False],
        [True, True, False, False],
    ]


def test_padding_mask_blocks_padded_keys() -> None:
    mask = padding_mask(torch.tensor([[False, True], [False, False]]))
    assert mask.shape == (2, 1, 1, 2)
    assert mask.flatten().tolist() == [True, False, True, True]


def _torch_mha_and_copy() -> tuple[nn.MultiheadAttention, MultiHeadAttention]:
    torch.manual_seed(0)
    ref = nn.MultiheadAttention(D, H, batch_first=True).eval()
    with torch.no_grad():
        # torch initialises these biases to zero; random ones make the copy check meaningful.
        nn.init.normal_(ref.in_proj_bias)
        nn.init.normal_(ref.out_proj.bias)
    ours = MultiHeadAttention(D, H).eval()
    with torch.no_grad():
        for proj, w, b in zip(
            (ours.q_proj, ours.k_proj, ours.v_proj),
            ref.in_proj_weight.chunk(3),
            ref.in_proj_bias.chunk(3),
            strict=True,
        ):
            proj.weight.copy_(w)
            proj.bias.copy_(b)
        ours.out_proj.weight.copy_(ref.out_proj.weight)
        ours.out_proj.bias.copy_(ref.out_proj.bias)
    return ref, ours


@pytest.mark.parametrize(
    ("causal", "padded"), [(False, False), (True, False), (False, True), (True, True)]
)
def test_self_attention_matches_torch_multihead_attention(causal: bool, padded: bool) -> None:
    ref, ours = _torch_mha_and_copy()
    x = torch.randn(B, TK, D)
    pad = _key_padding() if padded else None
    # torch's bool attn_mask is True where attending is *not* allowed.
    attn_mask = ~causal_mask(TK, TK) if causal else None
    # need_weights=True also keeps torch off its fast path, which zeroes padded query rows.
    want, want_weights = ref(
        x, x, x, attn_mask=attn_mask, key_padding_mask=pad, average_attn_weights=False
    )
    got, got_weights = ours(x, key_padding_mask=pad, causal=causal, need_weights=True)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(got_weights, want_weights, atol=1e-5, rtol=0)
    fused, _ = ours(x, key_padding_mask=pad, causal=causal)
    torch.testing.assert_close(fused, want, atol=1e-5, rtol=0)


def test_cross_attention_matches_torch_multihead_attention() -> None:
    ref, ours = _torch_mha_and_copy()
    x, context = torch.randn(B, TQ, D), torch.randn(B, TK, D)
    pad = _key_padding()
    want, want_weights = ref(x, context, context, key_padding_mask=pad, average_attn_weights=False)
    got, got_weights = ours(x, context, key_padding_mask=pad, need_weights=True)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(got_weights, want_weights, atol=1e-5, rtol=0)


def test_cached_cross_attention_reuses_context_keys() -> None:
    _, ours = _torch_mha_and_copy()
    x, context = torch.randn(B, 1, D), torch.randn(B, TK, D)
    cache = KVCache(n_layers=1)
    first, _ = ours(x, context, cache=cache, cross=True)
    cached_k = cache.cross(0)[0]
    # Later steps need no context: the cached keys stand in for it.
    again, _ = ours(x, cache=cache, cross=True)
    torch.testing.assert_close(again, first)
    assert cache.cross(0)[0] is cached_k
    assert cache.length == 0


def test_misused_attention_raises_clear_errors() -> None:
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(10, 3)
    mha = MultiHeadAttention(D, H)
    x = torch.randn(B, 1, D)
    with pytest.raises(ValueError, match="nothing cached"):
        mha(x, cache=KVCache(1), cross=True)
    with pytest.raises(ValueError, match="cross=True"):
        mha(x, torch.randn(B, TK, D), cache=KVCache(1))
