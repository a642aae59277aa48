"""Key/value caches for incremental decoding: growing self-attention, fixed cross-attention,
and many prefixes decoded side by side."""

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


class PrefixCache:
    """Self-attention k/v of many prefixes that grow by one position per step (B, nh, T, hs).

    The prefixes of a level may branch (one prefix continued by several tokens) or end: the
    next level names, for each of its rows, the row it continues (`reorder`). The buffers hold
    `max_len` positions from the start, so a step writes its k/v in place and only a level
    whose rows are not exactly the previous ones copies anything.
    """

    def __init__(self, n_layers: int, max_len: int):
        self.n_layers = n_layers
        self.max_len = max_len
        self.length = 0
        self.kv: list[tuple[Tensor, Tensor] | None] = [None] * n_layers

    def append(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write k/v (B, nh, 1, hs) at position `length`; return positions 0..length (views).

        `advance` moves to the next position once every layer has appended.
        """
        if self.length >= self.max_len:
            raise ValueError(f"prefix cache holds {self.max_len} positions")
        cached = self.kv[layer]
        if cached is None:
            b, nh, _, hs = k.shape
            cached = (k.new_empty(b, nh, self.max_len, hs), v.new_empty(b, nh, self.max_len, hs))
            self.kv[layer] = cached
        t = self.length
        cached[0][:, :, t : t + 1] = k
        cached[1][:, :, t : t + 1] = v
        return cached[0][:, :, : t + 1], cached[1][:, :, : t + 1]

    def advance(self) -> None:
        self.length += 1

    def reorder(self, index: Tensor) -> None:
        """Row i of the next level continues row `index[i]` of this one."""
        t = self.length
        for layer, cached in enumerate(self.kv):
            if cached is None:
                continue
            fresh = []
            for buf in cached:
                out = buf.new_empty(len(index), *buf.shape[1:])
                torch.index_select(buf[:, :, :t], 0, index, out=out[:, :, :t])
                fresh.append(out)
            self.kv[layer] = (fresh[0], fresh[1])
