"""Encoder and decoder stacks keep information where the masks say it may go, and init small."""

import pytest
import torch
from torch import nn

from vlarena.nn import (
    DecoderBlock,
    EncoderBlock,
    FeedForward,
    TransformerDecoder,
    TransformerEncoder,
    init_weights,
)

D, H, FF = 32, 4, 64


def test_causal_encoder_outputs_ignore_later_positions() -> None:
    torch.manual_seed(0)
    encoder = TransformerEncoder(2, D, H, FF).eval()
    x = torch.randn(2, 6, D)
    changed = x.clone()
    changed[:, 4:] = torch.randn(2, 2, D)
    before, _ = encoder(x, causal=True)
    after, _ = encoder(changed, causal=True)
    torch.testing.assert_close(after[:, :4], before[:, :4])
    assert not torch.allclose(after[:, 4:], before[:, 4:])


def test_encoder_ignores_padded_positions() -> None:
    torch.manual_seed(0)
    encoder = TransformerEncoder(2, D, H, FF).eval()
    x = torch.randn(2, 6, D)
    pad = torch.zeros(2, 6, dtype=torch.bool)
    pad[0, 3:] = True
    changed = x.clone()
    changed[0, 3:] = torch.randn(3, D)
    before, weights = encoder(x, key_padding_mask=pad, need_weights=True)
    after, _ = encoder(changed, key_padding_mask=pad)
    torch.testing.assert_close(after[0, :3], before[0, :3])
    torch.testing.assert_close(after[1], before[1])
    assert len(weights) == 2
    assert weights[0].shape == (2, H, 6, 6)
    assert (weights[1][0, :, :, 3:] == 0).all()


def test_decoder_returns_cross_attention_weights_per_layer() -> None:
    torch.manual_seed(0)
    decoder = TransformerDecoder(3, D, H, FF).eval()
    x, memory = torch.randn(2, 5, D), torch.randn(2, 9, D)
    memory_pad = torch.zeros(2, 9, dtype=torch.bool)
    memory_pad[1, 6:] = True
    out, weights = decoder(x, memory, memory_padding_mask=memory_pad, need_weights=True)
    assert out.shape == (2, 5, D)
    assert len(weights) == 3
    for w in weights:
        assert w.shape == (2, H, 5, 9)
        torch.testing.assert_close(w.sum(-1), torch.ones(2, H, 5))
        assert (w[1, :, :, 6:] == 0).all()
    fused, none = decoder(x, memory, memory_padding_mask=memory_pad)
    assert none is None
    torch.testing.assert_close(fused, out, atol=1e-5, rtol=0)


def test_decoder_self_attention_is_causal() -> None:
    torch.manual_seed(0)
    block = DecoderBlock(D, H, FF).eval()
    x, memory = torch.randn(1, 5, D), torch.randn(1, 3, D)
    changed = x.clone()
    changed[:, -1] = torch.randn(D)
    before, _ = block(x, memory)
    after, _ = block(changed, memory)
    torch.testing.assert_close(after[:, :-1], before[:, :-1])


def test_blocks_are_pre_layer_norm_residuals() -> None:
    torch.manual_seed(0)
    block = EncoderBlock(D, H, FF).eval()
    x = torch.randn(2, 4, D)
    a, _ = block.attn(block.ln1(x))
    h = x + a
    want = h + block.ff(block.ln2(h))
    got, none = block(x)
    assert none is None
    torch.testing.assert_close(got, want)


def test_dropout_is_active_only_in_training() -> None:
    torch.manual_seed(0)
    encoder = TransformerEncoder(1, D, H, FF, dropout=0.5)
    x = torch.randn(2, 4, D)
    assert not torch.allclose(encoder(x)[0], encoder(x)[0])
    encoder.eval()
    torch.testing.assert_close(encoder(x)[0], encoder(x)[0])


def test_init_weights_gives_small_linears_zero_biases_and_default_layer_norms() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        FeedForward(64, 256), nn.Embedding(100, 64), nn.LayerNorm(64), nn.Linear(4, 4, bias=False)
    )
    model.apply(init_weights)
    linear, embedding, norm = model[0].fc_in, model[1], model[2]
    assert linear.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert embedding.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert (linear.bias == 0).all()
    assert (norm.weight == 1).all() and (norm.bias == 0).all()
    decoder = TransformerDecoder(1, D, H, FF)
    assert (decoder.layers[0].cross_attn.q_proj.bias == 0).all()
