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
    """Self-attention k/v of many prefixes that grow by one position per step, kept in slots
    (S, nh, max_len, hs).

    The prefixes of a level may branch (one prefix continued by several tokens) or end: the
    next level names, for each of its rows, the row it continues (`reorder`). A row keeps its
    slot while it continues alone; where a prefix branches, its first continuation keeps the
    slot and each other one gets a slot freed by a prefix that ended (or a new one), into
    which the shared prefix is copied. So a level copies only its new branches' prefixes, not
    every row's, and a step writes its k/v in place. Attention runs over the slots:
    `to_slots` places a level's rows (queries) in their slots, `to_rows` reads them back.
    """

    def __init__(self, n_layers: int, max_len: int, rows: int = 0):
        self.n_layers = n_layers
        self.max_len = max_len
        self.length = 0
        self.capacity = rows  # slots to allocate at the first append (more when needed)
        self.kv: list[tuple[Tensor, Tensor] | None] = [None] * n_layers
        self.rows = 0  # rows of the current level
        self.used = 0  # slots 0..used-1 hold every row so far: attention reads only those
        self.slots: Tensor | None = None  # slot of each row; None: row i is in slot i

    def append(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write k/v (N, nh, 1, hs) of the level's rows at position `length`; return
        positions 0..length of the slots in use (views, (`used`, nh, length + 1, hs)).

        `advance` moves to the next position once every layer has appended.
        """
        if self.length >= self.max_len:
            raise ValueError(f"prefix cache holds {self.max_len} positions")
        cached = self.kv[layer]
        if cached is None:
            n, nh, _, hs = k.shape
            self.capacity = max(self.capacity, n)
            shape = (self.capacity, nh, self.max_len, hs)
            # Zeros, not garbage: a free slot is attended by a query nobody reads.
            cached = (k.new_zeros(shape), v.new_zeros(shape))
            self.kv[layer] = cached
        t = self.length
        if self.slots is None:
            self.rows = self.used = len(k)
            cached[0][: len(k), :, t] = k[:, :, 0]
            cached[1][: len(v), :, t] = v[:, :, 0]
        else:
            cached[0][self.slots, :, t] = k[:, :, 0]
            cached[1][self.slots, :, t] = v[:, :, 0]
        u = self.used
        return cached[0][:u, :, : t + 1], cached[1][:u, :, : t + 1]

    def advance(self) -> None:
        self.length += 1

    def to_slots(self, x: Tensor) -> Tensor:
        """The level's rows x (N, ...) in their slots (`used`, ...); zeros in the others."""
        if self.slots is None:
            return x
        out = x.new_zeros(self.used, *x.shape[1:])
        out[self.slots] = x
        return out

    def to_rows(self, y: Tensor) -> Tensor:
        """What `to_slots` placed, back in the level's row order (N, ...)."""
        return y if self.slots is None else y[self.slots]

    def reorder(self, index: Tensor) -> None:
        """Row i of the next level continues row `index[i]` of this one; -1: a row nobody
        reads (padding), which takes any free slot and copies nothing."""
        if all(kv is None for kv in self.kv):  # nothing cached yet
            self.rows = len(index)
            return
        old = self.slots if self.slots is not None else torch.arange(self.rows, device=index.device)
        real = index >= 0
        parent_slot = old[index.clamp(min=0)]
        # The first continuation of each row keeps its slot; the others need one.
        n = len(index)
        first = torch.full_like(old, n).scatter_reduce(
            0, index[real], torch.arange(n, device=index.device)[real], "amin"
        )
        keeps = torch.zeros_like(real)
        keeps[first[first < n]] = True
        slots = torch.full_like(index, -1)
        slots[keeps] = parent_slot[keeps]
        taken = torch.zeros(self.capacity, dtype=torch.bool, device=index.device)
        taken[slots[keeps]] = True
        free = torch.nonzero(~taken).flatten()  # lowest first: `used` grows only as needed
        need = int((~keeps).sum())
        if need > len(free):
            self._grow(self.capacity + need - len(free))
            taken = torch.nn.functional.pad(taken, (0, need - len(free)))
            free = torch.nonzero(~taken).flatten()
        movers = torch.nonzero(~keeps).flatten()
        slots[movers] = free[:need]
        branches = movers[real[movers]]  # continuations that copy their prefix
        t = self.length
        if len(branches) and t:
            src, dst = parent_slot[branches], slots[branches]
            for cached in self.kv:
                if cached is None:
                    continue
                for buf in cached:
                    buf[:, :, :t].index_copy_(0, dst, buf[:, :, :t].index_select(0, src))
        self.slots, self.rows = slots, len(index)
        self.used = max(self.used, int(slots.max()) + 1) if len(slots) else self.used

    def _grow(self, capacity: int) -> None:
        """More slots, the cached positions copied over."""
        t = self.length
        for layer, cached in enumerate(self.kv):
            if cached is None:
                continue
            fresh = []
            for buf in cached:
                out = buf.new_zeros(capacity, *buf.shape[1:])
                out[: len(buf), :, :t] = buf[:, :, :t]
                fresh.append(out)
            self.kv[layer] = (fresh[0], fresh[1])
        self.capacity = capacity
