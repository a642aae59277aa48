"""An autoregressive text decoder over a memory of vectors: the token VLM's language model
and VL-JEPA's Y-decoder. Teacher forcing, candidate scoring, greedy and beam decoding."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlarena.data.tokenizer import Vocabulary
from vlarena.models.prefix_tree import Forest, Level, PrefixTree, build_tree, merge
from vlarena.nn import (
    DecoderBlock,
    KVCache,
    LearnedPositionalEncoding,
    PrefixCache,
    TransformerDecoder,
    init_weights,
)

IGNORE = -100


class TextDecoder(nn.Module):
    """Self-attends causally over text and cross-attends to a memory (B, M, d).

    A sequence is `[CLS] text [SEP]`, or `[CLS] query [SEP] text [SEP]` when a query
    conditions it; the loss covers only what follows the query.
    """

    def __init__(
        self,
        vocab: Vocabulary,
        d_model: int,
        n_layers: int,
        n_heads: int,
        d_ff: int,
        dropout: float = 0.0,
        max_len: int = 64,
    ) -> None:
        super().__init__()
        self.vocab = vocab
        self.n_layers = n_layers
        self.max_len = max_len
        self.tok_emb = nn.Embedding(len(vocab), d_model)
        self.pos = LearnedPositionalEncoding(d_model, max_len + 1)
        self.drop = nn.Dropout(dropout)
        self.decoder = TransformerDecoder(n_layers, d_model, n_heads, d_ff, dropout)
        self.lm_head = nn.Linear(d_model, len(vocab))
        self.apply(init_weights)
        self._ids: dict[str, list[int]] = {}

    # --- token sequences -----------------------------------------------------------------------
    def _encode(self, text: str) -> list[int]:
        ids = self._ids.get(text)
        if ids is None:
            ids = self._ids[text] = self.vocab.encode(text, bos=False, eos=False)
        return ids

    def prefix(self, query: str | None) -> list[int]:
        """[CLS], then the query and [SEP] when there is one: what decoding starts from."""
        v = self.vocab
        return [v.bos_id] + ([*self._encode(query), v.eos_id] if query else [])

    def sequences(
        self,
        texts: Sequence[str],
        queries: Sequence[str | None] | None = None,
        device: torch.device | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Teacher-forcing inputs (B, T) and labels (B, T), IGNORE where nothing is predicted."""
        queries = queries or [None] * len(texts)
        seqs, prefix_lens = [], []
        for text, query in zip(texts, queries, strict=True):
            seq, first_label = self._sequence(text, query)
            seqs.append(seq)
            prefix_lens.append(first_label)
        ids = torch.full((len(seqs), max(map(len, seqs))), self.vocab.pad_id, dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
        labels = ids[:, 1:].clone()
        labels[labels == self.vocab.pad_id] = IGNORE
        for i, n in enumerate(prefix_lens):
            labels[i, : n - 1] = IGNORE  # the query is given, not predicted
        return ids[:, :-1].to(device), labels.to(device)

    # --- forward ---------------------------------------------------------------------------------
    def forward(
        self,
        inputs: Tensor,
        memory: Tensor,
        *,
        cache: KVCache | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, list[Tensor] | None]:
        """Next-token logits (B, T, V) for `inputs` (B, T); with a cache, only the new tokens."""
        h, weights = self.hidden(inputs, memory, cache=cache, need_weights=need_weights)
        return self.lm_head(h), weights

    def hidden(
        self,
        inputs: Tensor,
        memory: Tensor,
        *,
        cache: KVCache | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, list[Tensor] | None]:
        """The decoder's last hidden states (B, T, d), before the output layer."""
        offset = cache.length if cache is not None else 0
        x = self.drop(self.pos(self.tok_emb(inputs), offset=offset))
        pad = None if cache is not None else inputs == self.vocab.pad_id
        return self.decoder(
            x, memory, self_padding_mask=pad, cache=cache, need_weights=need_weights
        )

    def token_logprobs(
        self, inputs: Tensor, labels: Tensor, memory: Tensor, smoothing: float = 0.0
    ) -> Tensor:
        """Mean log-likelihood of each sequence's predicted tokens (B,)."""
        logits, _ = self(inputs, memory)
        nll = F.cross_entropy(
            logits.transpose(1, 2),
            labels,
            ignore_index=IGNORE,
            reduction="none",
            label_smoothing=smoothing,
        )  # (B, T), zero where ignored
        mask = labels != IGNORE
        return -(nll * mask).sum(1) / mask.sum(1).clamp(min=1)

    def loss(
        self, inputs: Tensor, labels: Tensor, memory: Tensor, smoothing: float = 0.0
    ) -> Tensor:
        # Each sequence weighs the same whatever its length, so a batch split across
        # data-parallel ranks averages to the same loss as the whole batch.
        return -self.token_logprobs(inputs, labels, memory, smoothing).mean()

    def _candidate_lists(
        self, b: int, candidates: Sequence[str] | Sequence[Sequence[str]]
    ) -> Sequence[Sequence[str]]:
        # `str` is itself a `Sequence[str]`: the isinstance check cannot narrow `candidates`.
        if isinstance(candidates[0], str):
            return [list(cast(Sequence[str], candidates))] * b
        return candidates

    def _sequence(self, text: str, query: str | None) -> tuple[list[int], int]:
        """A candidate's ids as `sequences` feeds them, and the index of its first label."""
        prefix = self.prefix(query)
        return (prefix + self._encode(text) + [self.vocab.eos_id])[: self.max_len + 1], len(prefix)

    @torch.no_grad()
    def score(
        self,
        memory: Tensor,
        candidates: Sequence[str] | Sequence[Sequence[str]],
        queries: Sequence[str | None] | None = None,
        max_prefixes: int = 4096,
        tree: bool | None = None,
    ) -> Tensor:
        """Mean token log-likelihood (B, C) of each candidate given each memory (and query).

        Each image's candidates form a prefix tree (`prefix_tree`), decoded one level at a
        time with the KV cache: a prefix that candidates share is computed once per image, the
        cross-attention keys and values once per image, and the output layer only where a label
        is read, in blocks of rows. With one candidate list for every image (a retrieval pool),
        the first layer's self-attention, which reads only the text, runs once for all images.
        The same numbers as `score_pairs`, a full pass per (image, candidate), which it falls
        back to where the tree does not pay: when the candidates share less than half of their
        prefixes and the output layer costs less per position than the decoder layers (a small
        vocabulary), a pass per pair runs the same work in larger matrix products. `tree`
        forces one way (True: the tree, False: a pass per pair). `max_prefixes` bounds the rows
        of one decoder step, and so the cache's memory; a tree shared by every image caches its
        first layer once, so it steps over n_layers / (n_layers - 1) times as many rows.
        """
        b = memory.shape[0]
        per_row = self._candidate_lists(b, candidates)
        queries = queries or [None] * b
        if tree is False:
            return self.score_pairs(memory, per_row, queries)
        n_cands = len(per_row[0])
        trees: dict[tuple[str | None, tuple[str, ...]], PrefixTree] = {}
        row_trees = []
        for cands, query in zip(per_row, queries, strict=True):
            key = (query, tuple(cands))
            if key not in trees:
                ids = [self._sequence(c, query) for c in cands]
                trees[key] = build_tree([s for s, _ in ids], [n for _, n in ids])
            row_trees.append(trees[key])
        if tree is None and not self._tree_pays(row_trees):
            return self.score_pairs(memory, per_row, queries)
        scores = memory.new_empty(b, n_cands)
        budget = max_prefixes
        if len(trees) == 1 and self.n_layers > 1:
            # One tree for every image: the first layer's cache is the tree's, not each
            # image's (`_score_forest`), so the same memory holds this many more rows.
            budget = max_prefixes * self.n_layers // (self.n_layers - 1)
        start = 0
        while start < b:
            stop, width = start, 0
            while stop < b and (stop == start or width + row_trees[stop].width <= budget):
                width += row_trees[stop].width
                stop += 1
            forest = merge(row_trees[start:stop], n_cands, memory.device, self.vocab.pad_id)
            scores[start:stop] = self._score_forest(memory[start:stop], forest)
            start = stop
        return scores

    def _tree_pays(self, trees: Sequence[PrefixTree]) -> bool:
        shared = sum(t.size for t in trees) <= 0.5 * sum(t.positions for t in trees)
        block = cast(DecoderBlock, self.decoder.layers[0])
        d, d_ff = block.ff.fc_in.in_features, block.ff.fc_in.out_features
        # FLOPs per position: 2·d·V in the output layer; per decoder layer about 2·(6d² + 2d·d_ff)
        # (self-attention 4d², cross-attention queries and output 2d², the feed-forward 2d·d_ff).
        output_dominates = len(self.vocab) > self.n_layers * (6 * d + 2 * d_ff)
        return shared or output_dominates

    def _score_forest(self, memory: Tensor, forest: Forest) -> Tensor:
        """Scores (images, C) of a forest. Where every image has the same tree, the first
        layer's self-attention and cross-attention queries, which read only the text, run once
        for the tree (with a cache of its own) instead of once per image."""
        total = memory.new_zeros(forest.images * forest.candidates)
        layers = cast(Sequence[DecoderBlock], self.decoder.layers)
        cross = [block.cross_keys_values(memory) for block in layers]  # once per image
        depth = len(forest.levels)
        cache = PrefixCache(self.n_layers, depth, max(len(lv.tokens) for lv in forest.levels))
        text_cache = (
            PrefixCache(1, depth, max(lv.width for lv in forest.levels)) if forest.shared else None
        )
        for t, level in enumerate(forest.levels):
            if level.parents is not None:
                cache.reorder(level.parents)
            if text_cache is None:
                x = self.pos(self.tok_emb(level.tokens[:, None]), offset=t)  # (N, 1, d)
                first = 0
            else:
                w = level.width  # image 0's rows and parents are the tree's own
                if level.parents is not None:
                    text_cache.reorder(level.parents[:w])
                x = self.pos(self.tok_emb(level.tokens[:w, None]), offset=t)  # (w, 1, d)
                x = layers[0].self_attend_prefixes(x, text_cache, 0)
                queries = layers[0].cross_queries(x, w).expand(forest.images, -1, -1, -1)
                x = layers[0].attend_memory_prefixes(
                    x.repeat(forest.images, 1, 1), queries, cross[0]
                )
                text_cache.advance()
                first = 1
            for i in range(first, len(layers)):
                x = layers[i].forward_prefixes(x, cache, i, cross[i], level.width)
            cache.advance()
            if len(level.read):
                h = self.decoder.ln_f(x[:, 0])
                total.index_add_(0, level.out, self._label_logprobs(h, level))
        return (total / forest.counts).view(forest.images, forest.candidates)

    def _label_logprobs(self, h: Tensor, level: Level, rows: int = 128) -> Tensor:
        """log p(label | prefix) of each label read at `level`, the output layer in chunks of
        rows: a (V, rows) block of logits at a time, vocabulary-major. With the full vocabulary
        (30,522 words) `W @ hᵀ` runs as fast as `h @ Wᵀ` or faster on CPUs (~1.3x on an AMD
        EPYC).

        The log-sum-exp makes two passes over the block, exp in place and a sum, where
        `logsumexp` makes four and allocates. An fp32 exp overflows only above ~88 and a sum of
        exps loses nothing to a common offset, so the shift by the maximum is needed only in a
        column whose sum is not finite and positive: those are computed again, shifted."""
        out = h.new_empty(len(level.token))
        weight, bias = self.lm_head.weight, self.lm_head.bias

        def block(cols: Tensor) -> Tensor:
            return weight @ cols if bias is None else torch.addmm(bias[:, None], weight, cols)

        for s in range(0, len(level.read), rows):
            chunk = h[level.read[s : s + rows]].T  # (d, r)
            logits = block(chunk)
            pick = (level.row >= s) & (level.row < s + rows)
            r = level.row[pick] - s
            picked = logits[level.token[pick], r]  # read before the block is overwritten
            sums = logits.exp_().sum(0)
            lse = sums.log()
            unsafe = ~(torch.isfinite(sums) & (sums > 0))
            if bool(unsafe.any()):
                lse[unsafe] = block(chunk[:, unsafe]).logsumexp(0)
            out[pick] = picked - lse[r]
        return out

    @torch.no_grad()
    def score_pairs(
        self,
        memory: Tensor,
        candidates: Sequence[str] | Sequence[Sequence[str]],
        queries: Sequence[str | None] | None = None,
        chunk: int = 1024,
    ) -> Tensor:
        """`score` by a full decoder pass per (image, candidate) pair: the reference that the
        prefix-tree scorer is checked and benchmarked against."""
        b = memory.shape[0]
        per_row = self._candidate_lists(b, candidates)
        queries = queries or [None] * b
        pairs = [(i, c, queries[i]) for i in range(b) for c in per_row[i]]
        scores = memory.new_empty(len(pairs))
        for start in range(0, len(pairs), chunk):
            part = pairs[start : start + chunk]
            inputs, labels = self.sequences(
                [c for _, c, _ in part], [q for _, _, q in part], memory.device
            )
            mem = memory[torch.tensor([i for i, _, _ in part], device=memory.device)]
            scores[start : start + len(part)] = self.token_logprobs(inputs, labels, mem)
        return scores.view(b, len(per_row[0]))

    # --- decoding ----------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        memory: Tensor,
        queries: Sequence[str | None] | None = None,
        *,
        max_len: int = 32,
        beam_size: int = 1,
        return_attention: bool = False,
    ) -> tuple[list[str], list[Tensor] | None]:
        """Texts for each memory, greedy or by beam search, with the KV cache.

        With `return_attention` (greedy only): per row, the cross-attention of every generated
        token to the memory, averaged over heads and layers (T, M).
        """
        if return_attention and beam_size != 1:
            raise ValueError("attention maps come with greedy decoding (beam_size=1)")
        b = memory.shape[0]
        prefixes = [self.prefix(q) for q in (queries or [None] * b)]
        tokens: list[list[int]] = [[] for _ in range(b)]
        attn: list[Tensor] = [memory.new_empty(0)] * b
        # Decode prompts of equal length together: positions then match those seen in training.
        for length in sorted({len(p) for p in prefixes}):
            rows = [i for i, p in enumerate(prefixes) if len(p) == length]
            idx = torch.tensor(rows, device=memory.device)
            group = [prefixes[i] for i in rows]
            if beam_size == 1:
                out, maps = self._greedy(memory[idx], group, max_len, return_attention)
            else:
                out, maps = self._beam(memory[idx], group, max_len, beam_size), None
            for j, i in enumerate(rows):
                tokens[i] = out[j]
                if maps is not None:
                    attn[i] = maps[j]
        texts = [self.vocab.decode(t) for t in tokens]
        return texts, (attn if return_attention else None)

    def _prefill(
        self, memory: Tensor, prefixes: list[list[int]], need_weights: bool = False
    ) -> tuple[KVCache, Tensor, list[Tensor] | None]:
        """Runs prefixes of equal length through a fresh cache; returns the cache, the last
        logits (B, V) and, when asked, the cross-attention weights of the last position."""
        cache = KVCache(self.n_layers)
        ids = torch.tensor(prefixes, device=memory.device)
        logits, weights = self(ids, memory, cache=cache, need_weights=need_weights)
        if weights is not None:
            weights = [w[:, :, -1:] for w in weights]
        return cache, logits[:, -1], weights

    def _greedy(
        self, memory: Tensor, prefixes: list[list[int]], max_len: int, need_weights: bool
    ) -> tuple[list[list[int]], list[Tensor] | None]:
        b, eos = memory.shape[0], self.vocab.eos_id
        max_len = min(max_len, self.max_len + 1 - len(prefixes[0]))
        cache, logits, weights = self._prefill(memory, prefixes, need_weights)
        out: list[Tensor] = []
        maps: list[Tensor] = []  # per generated token (B, M): attention of the step that chose it
        done = torch.zeros(b, dtype=torch.bool, device=memory.device)
        for step in range(max_len):
            nxt = logits.argmax(-1).masked_fill(done, eos)
            out.append(nxt)
            if need_weights:
                assert weights is not None  # the decoder returns weights when asked for them
                maps.append(torch.stack(weights).mean((0, 2))[:, 0])  # layers, heads → (B, M)
            done |= nxt == eos
            if done.all() or step == max_len - 1:
                break
            logits, weights = self(nxt[:, None], memory, cache=cache, need_weights=need_weights)
            logits = logits[:, -1]
        rows = [row.tolist() for row in torch.stack(out, 1)]
        if not need_weights:
            return rows, None
        attn = torch.stack(maps, 1)  # (B, T, M)
        lengths = [row.index(eos) if eos in row else len(row) for row in rows]
        return rows, [attn[i, :n] for i, n in enumerate(lengths)]

    def _beam(
        self, memory: Tensor, prefixes: list[list[int]], max_len: int, k: int
    ) -> list[list[int]]:
        b, eos = memory.shape[0], self.vocab.eos_id
        max_len = min(max_len, self.max_len + 1 - len(prefixes[0]))
        memory = memory.repeat_interleave(k, 0)  # (B*k, M, d)
        cache, logits, _ = self._prefill(memory, [p for p in prefixes for _ in range(k)])
        scores = torch.zeros(b, k, device=memory.device)
        scores[:, 1:] = float("-inf")  # the k beams start identical: keep one alive at first
        seqs = torch.zeros(b * k, 0, dtype=torch.long, device=memory.device)
        done = torch.zeros(b * k, dtype=torch.bool, device=memory.device)
        lengths = torch.zeros(b * k, device=memory.device)
        offsets = torch.arange(b, device=memory.device)[:, None] * k
        for step in range(max_len):
            logp = logits.float().log_softmax(-1)  # (B*k, V)
            logp[done] = float("-inf")  # a finished beam only extends with EOS, at no cost
            logp[done, eos] = 0.0
            vocab = logp.shape[1]
            scores, flat = (scores.view(-1, 1) + logp).view(b, -1).topk(k, dim=1)
            beam = (flat // vocab + offsets).view(-1)
            tok = (flat % vocab).view(-1)
            cache.reorder(beam)
            seqs = torch.cat([seqs[beam], tok[:, None]], 1)
            lengths = lengths[beam] + (~done[beam]).float()
            done = done[beam] | (tok == eos)
            if done.all() or step == max_len - 1:
                break
            logits, _ = self(tok[:, None], memory, cache=cache)
            logits = logits[:, -1]
        best = (scores.view(-1) / lengths.clamp(min=1)).view(b, k).argmax(1) + offsets[:, 0]
        return [seqs[i].tolist() for i in best]
