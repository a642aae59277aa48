"""Key/value cache for incremental decoding: growing self-attention, fixed cross-attention."""

from __future__ import annotations

import torch
from torch import Tensor


class KVCache:
    """Per-layer k/v tensors (B, nh, T, hs) kept between decoding steps.

    Self-attention k/v grow by one append per layer per step; cross-attention k/v are computed
    on the first step and reused after. There is no step counter: `length` reads layer 0's keys,
    so between forward passes it is the number of positions already decoded, which is also the
    positional offset of the next input. One cache serves one memory: start a new cache for a new
    batch of images.
    """

    def __init__(self, n_layers: int):
        self.n_layers = n_layers
        self.self_kv: list[tuple[Tensor, Tensor] | None] = [None] * n_layers
        self.cross_kv: list[tuple[Tensor, Tensor] | None] = [None] * n_layers

    @property
    def length(self) -> int:
        """Number of cached self-attention positions (layer 0)."""
        cached = self.self_kv[0]
        return 0 if cached is None else cached[0].size(2)

    def append(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append k/v (B, nh, T_new, hs) for `layer`; return all cached k/v (B, nh, T, hs)."""
        cached = self.self_kv[layer]
        if cached is not None:
            k = torch.cat([cached[0], k], dim=2)
            v = torch.cat([cached[1], v], dim=2)
        self.self_kv[layer] = (k, v)
        return k, v

    def cross(self, layer: int) -> tuple[Tensor, Tensor] | None:
        """The cross-attention k/v of `layer`, or None before the first step."""
        return self.cross_kv[layer]

    def set_cross(self, layer: int, k: Tensor, v: Tensor) -> None:
        """Store the cross-attention k/v (B, nh, Tmem, hs) of `layer`."""
        self.cross_kv[layer] = (k, v)

    def reorder(self, index: Tensor) -> None:
        """Select batch rows of every cached tensor, e.g. the surviving hypotheses in beam search.

        `index` (B_new,) may repeat rows, so it also expands a batch into beams.
        """
        self.self_kv = [_select_rows(kv, index) for kv in self.self_kv]
        self.cross_kv = [_select_rows(kv, index) for kv in self.cross_kv]


def _select_rows(kv: tuple[Tensor, Tensor] | None, index: Tensor) -> tuple[Tensor, Tensor] | None:
    if kv is None:
        return None
    k, v = kv
    return k.index_select(0, index), v.index_select(0, index)
