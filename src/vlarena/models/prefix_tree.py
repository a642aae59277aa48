"""Candidate texts as prefix trees, so a decoder reads each shared prefix once per image.

Scoring a candidate text by its mean token log-likelihood needs the decoder's next-token
distribution after every prefix of the text. Candidates that start alike ("a bag top left, a
shirt ...", "a bag top left, a coat ...") share those prefixes, and a causal decoder computes
the same hidden states for them. A `PrefixTree` keeps each distinct prefix once, level by level
(level t holds the prefixes of t + 1 tokens), with the labels read after it; a `Forest` lines up
the trees of several images so that one decoder step runs a whole level of all of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class PrefixTree:
    """The input prefixes of one image's candidate sequences.

    Per level t: `tokens[t]` the last token of each prefix, `parents[t]` the index of the
    prefix one token shorter in level t - 1 (at level 0, -1: a root), and the labels read
    after the prefixes of that level as parallel arrays `edge_node[t]` (which prefix),
    `edge_token[t]` (the next token) and `edge_cand[t]` (whose candidate it is).
    `counts[c]` is how many labels candidate c has; `positions` how many decoder positions
    the candidates would take one by one, without the tree.
    """

    tokens: list[np.ndarray]
    parents: list[np.ndarray]
    edge_node: list[np.ndarray]
    edge_token: list[np.ndarray]
    edge_cand: list[np.ndarray]
    counts: np.ndarray
    positions: int

    @property
    def width(self) -> int:
        """The widest level: how many prefixes one decoder step runs for this tree."""
        return max(len(t) for t in self.tokens)

    @property
    def size(self) -> int:
        """Prefixes in all: decoder positions computed for this tree."""
        return sum(len(t) for t in self.tokens)


def build_tree(sequences: Sequence[Sequence[int]], first_labels: Sequence[int]) -> PrefixTree:
    """The tree of `sequences` (token ids, each fed as inputs `s[:-1]` to predict `s[1:]`).

    Token k of a sequence (k >= 1) is a label, read after the prefix `s[:k]`, when
    k >= `first_labels[i]`: tokens of a query that conditions the text are given, not scored.
    """
    depth = max((len(s) - 1 for s in sequences), default=0)
    index: list[dict[tuple[int, int], int]] = [{} for _ in range(depth)]
    tokens: list[list[int]] = [[] for _ in range(depth)]
    parents: list[list[int]] = [[] for _ in range(depth)]
    edges: list[list[tuple[int, int, int]]] = [[] for _ in range(depth)]
    counts = np.zeros(len(sequences), dtype=np.int64)
    for c, (seq, first) in enumerate(zip(sequences, first_labels, strict=True)):
        parent = -1
        for t in range(len(seq) - 1):
            key = (parent, seq[t])
            node = index[t].get(key)
            if node is None:
                node = index[t][key] = len(tokens[t])
                tokens[t].append(seq[t])
                parents[t].append(parent)
            if t + 1 >= first:
                edges[t].append((node, seq[t + 1], c))
                counts[c] += 1
            parent = node

    def column(rows: list[tuple[int, int, int]], i: int) -> np.ndarray:
        return np.array([r[i] for r in rows], dtype=np.int64)

    return PrefixTree(
        tokens=[np.array(t, dtype=np.int64) for t in tokens],
        parents=[np.array(p, dtype=np.int64) for p in parents],
        edge_node=[column(e, 0) for e in edges],
        edge_token=[column(e, 1) for e in edges],
        edge_cand=[column(e, 2) for e in edges],
        counts=counts,
        positions=sum(max(len(s) - 1, 0) for s in sequences),
    )


@dataclass(frozen=True)
class Level:
    """One level of a forest: what a single decoder step computes.

    Its rows are `width` per image, image after image (an image whose tree is narrower here
    fills the rest with padding rows that nothing reads). `tokens` (N,) are the inputs;
    `parents` (N,) the row of the previous level each row continues (-1 for a padding row),
    or None at level 0 and where they are exactly 0..N-1 (nothing branches or ends, so the
    cache stays as it is).
    The labels read here: `read` (R,) the rows whose next-token distribution is needed, and
    per label `row` (into `read`), `token`, and `out`, the flat (image × candidate) score it
    adds to.
    """

    width: int
    tokens: Tensor
    parents: Tensor | None
    read: Tensor
    row: Tensor
    token: Tensor
    out: Tensor


@dataclass(frozen=True)
class Forest:
    """The trees of several images, merged level by level; scores come out (images, C)."""

    levels: list[Level]
    counts: Tensor  # (images × C,) labels per score, at least 1
    images: int
    candidates: int
    # Every image has the same tree (one candidate list for all, as in a retrieval pool): the
    # rows of image 0 are then the tree's own, and what depends only on the text is the same
    # for every image.
    shared: bool = False


def merge(
    trees: Sequence[PrefixTree], candidates: int, device: torch.device, pad: int = 0
) -> Forest:
    """Lines up `trees` (tree i belongs to image i, each over `candidates` candidates);
    padding rows get the token `pad`."""
    depth = max((len(t.tokens) for t in trees), default=0)
    levels: list[Level] = []
    prev_width = 0
    for t in range(depth):
        width = max(len(tree.tokens[t]) for tree in trees if t < len(tree.tokens))
        toks = np.full((len(trees), width), pad, dtype=np.int64)
        pars = np.full((len(trees), width), -1, dtype=np.int64)
        nodes, labels, outs = [], [], []
        for i, tree in enumerate(trees):
            if t >= len(tree.tokens):
                continue
            n = len(tree.tokens[t])
            toks[i, :n] = tree.tokens[t]
            if t > 0:
                pars[i, :n] = i * prev_width + tree.parents[t]
            nodes.append(tree.edge_node[t] + i * width)
            labels.append(tree.edge_token[t])
            outs.append(tree.edge_cand[t] + i * candidates)
        parents = pars.reshape(-1)
        identity = t == 0 or (
            width == prev_width and bool((parents == np.arange(len(parents))).all())
        )
        read, row = np.unique(np.concatenate(nodes), return_inverse=True)
        levels.append(
            Level(
                width=width,
                tokens=torch.from_numpy(toks.reshape(-1)).to(device),
                parents=None if identity else torch.from_numpy(parents).to(device),
                read=torch.from_numpy(read).to(device),
                row=torch.from_numpy(row.reshape(-1)).to(device),
                token=torch.from_numpy(np.concatenate(labels)).to(device),
                out=torch.from_numpy(np.concatenate(outs)).to(device),
            )
        )
        prev_width = width
    counts = np.concatenate([tree.counts for tree in trees]) if trees else np.zeros(0)
    return Forest(
        levels=levels,
        counts=torch.from_numpy(np.maximum(counts, 1)).to(device),
        images=len(trees),
        candidates=candidates,
        shared=len(trees) > 1 and all(tree is trees[0] for tree in trees),
    )
