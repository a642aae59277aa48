"""Sinusoidal and learned positional encodings follow their definitions and respect offsets."""

import math

import pytest
import torch

from vlarena.nn import LearnedPositionalEncoding, SinusoidalPositionalEncoding


@pytest.mark.parametrize("d_model", [8, 7])
def test_sinusoidal_values_follow_the_vaswani_formula(d_model: int) -> None:
    max_len = 16
    pe = SinusoidalPositionalEncoding(d_model, max_len)
    got = pe(torch.zeros(1, max_len, d_model))[0]
    for pos in range(max_len):
        for j in range(d_model):
            angle = pos / 10000 ** ((j - j % 2) / d_model)
            want = math.sin(angle) if j % 2 == 0 else math.cos(angle)
            assert got[pos, j].item() == pytest.approx(want, abs=1e-5)


@pytest.mark.parametrize("encoding", [SinusoidalPositionalEncoding, LearnedPositionalEncoding])
def test_encoding_at_an_offset_equals_that_row_of_the_full_encoding(encoding: type) -> None:
    torch.manual_seed(0)
    pe = encoding(8, max_len=10)
    x = torch.randn(2, 10, 8)
    full = pe(x)
    for k in range(10):
        torch.testing.assert_close(pe(x[:, k : k + 1], offset=k), full[:, k : k + 1])


def test_learned_encoding_starts_small() -> None:
    torch.manual_seed(0)
    weight = LearnedPositionalEncoding(64, max_len=512).embedding.weight
    assert weight.std().item() == pytest.approx(0.02, rel=0.05)


@pytest.mark.parametrize("encoding", [SinusoidalPositionalEncoding, LearnedPositionalEncoding])
@pytest.mark.parametrize(("offset", "length"), [(0, 5), (3, 2), (-1, 1)])
def test_positions_outside_max_len_raise(encoding: type, offset: int, length: int) -> None:
    pe = encoding(8, max_len=4)
    with pytest.raises(ValueError, match="max_len"):
        pe(torch.zeros(1, length, 8), offset=offset)


def test_encoding_keeps_the_input_dtype() -> None:
    pe = SinusoidalPositionalEncoding(8, max_len=4)
    assert pe(torch.zeros(1, 4, 8, dtype=torch.bfloat16)).dtype == torch.bfloat16
