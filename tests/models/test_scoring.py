"""Candidate scoring over prefix trees gives the scores of a full decoder pass per pair."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vlarena.data.tokenizer import Vocabulary, WordPieceTokenizer
from vlarena.models.prefix_tree import build_tree, merge
from vlarena.models.text_decoder import TextDecoder

CAPTIONS = [
    "a bag top left, a shirt top right",
    "a bag top left, a coat top right",
    "a bag top right",
    "an ankle boot top left, a shirt top right",
    "a sneaker",
    "a coat top left, a bag top right, a dress bottom left, a shirt bottom right",
]


def decoder(vocabulary: str, max_len: int = 64, seed: int = 0) -> TextDecoder:
    """A random decoder in float64, where the two ways of scoring agree to rounding."""
    tok = WordPieceTokenizer.minilm()
    texts = [*CAPTIONS, "what is top left?", "which item?"]
    vocab = Vocabulary.full(tok) if vocabulary == "full" else Vocabulary.from_texts(tok, texts)
    torch.manual_seed(seed)
    dec = TextDecoder(vocab, d_model=32, n_layers=2, n_heads=4, d_ff=64, max_len=max_len)
    with torch.no_grad():  # far from the N(0, 0.02) init, so the scores differ a lot
        for p in dec.parameters():
            p.normal_(0, 0.5)
    return dec.double().eval()


@pytest.mark.parametrize("vocabulary", ["captions", "full"])
def test_prefix_tree_scores_equal_a_pass_per_pair(vocabulary):
    dec = decoder(vocabulary)
    memory = torch.randn(5, 7, 32, dtype=torch.float64)
    # one candidate list for every image (a retrieval pool), duplicates included
    shared = [*CAPTIONS, CAPTIONS[0]]
    want = dec.score_pairs(memory, shared)
    got = dec.score(memory, shared, tree=True)
    assert got.shape == (5, 7)
    assert (want.std() > 0.1).item()  # scores that a mixed-up row or label would change
    torch.testing.assert_close(got, want, atol=1e-9, rtol=0)
    # a list per image and a query per image: trees of different shapes side by side
    rng = np.random.default_rng(0)
    per_row = [[CAPTIONS[j] for j in rng.permutation(len(CAPTIONS))[:3]] for _ in range(5)]
    queries = ["what is top left?", None, "which item?", None, "what is top left?"]
    want = dec.score_pairs(memory, per_row, queries)
    for budget in (1, 10, 4096):  # one image per step, a few, all of them
        got = dec.score(memory, per_row, queries, max_prefixes=budget, tree=True)
        torch.testing.assert_close(got, want, atol=1e-9, rtol=0)


def test_logits_beyond_exps_range_score_as_a_pass_per_pair():
    # float32 exp overflows above ~88 and underflows below ~-103: a column of logits that
    # large (or that small everywhere) is computed again, shifted by its maximum.
    dec = decoder("captions").float()
    with torch.no_grad():
        dec.lm_head.bias[: len(dec.vocab) // 2] += 150.0
    memory = torch.randn(3, 7, 32)
    want = dec.score_pairs(memory, CAPTIONS)
    assert torch.isfinite(want).all()
    torch.testing.assert_close(dec.score(memory, CAPTIONS, tree=True), want, atol=1e-4, rtol=0)
    with torch.no_grad():
        dec.lm_head.bias -= 400.0
    want = dec.score_pairs(memory, CAPTIONS)
    torch.testing.assert_close(dec.score(memory, CAPTIONS, tree=True), want, atol=1e-4, rtol=0)


@pytest.mark.parametrize("family", ["token-vlm"])
def test_trained_token_vlm_scores_within_1e_5_of_a_pass_per_pair(
    family, tiny_models, tiny_splits, tiny_test_visual
):
    model = tiny_models[family]
    memory = model.memory(tiny_test_visual[:24])
    captions = tiny_splits.test.captions()[:24]
    want = model.text.score_pairs(memory, captions)
    torch.testing.assert_close(
        model.score_candidates(tiny_test_visual[:24], captions), want, atol=1e-5, rtol=0
    )


def test_truncated_candidates_score_like_their_truncated_sequences():
    dec = decoder("captions", max_len=6)
    memory = torch.randn(2, 3, 32, dtype=torch.float64)
    want = dec.score_pairs(memory, CAPTIONS, ["what is top left?", None])
    got = dec.score(memory, CAPTIONS, ["what is top left?", None], tree=True)
    torch.testing.assert_close(got, want, atol=1e-9, rtol=0)


def test_a_tree_keeps_each_shared_prefix_once():
    # [CLS]=0 then texts; labels start after the first token (or after a query of 2 tokens)
    seqs = [[0, 5, 6, 9], [0, 5, 7, 9], [0, 8, 9]]
    tree = build_tree(seqs, [1, 1, 2])
    assert [t.tolist() for t in tree.tokens] == [[0], [5, 8], [6, 7]]
    assert [p.tolist() for p in tree.parents] == [[-1], [0, 0], [0, 0]]
    # the root is read for two labels of candidates 0 and 1 (5 twice); candidate 2's query
    # is its first token after [CLS], so its only label is the last one
    assert tree.edge_token[0].tolist() == [5, 5]
    assert tree.edge_node[1].tolist() == [0, 0, 1]
    assert tree.edge_cand[1].tolist() == [0, 1, 2]
    assert tree.counts.tolist() == [3, 3, 1]
    assert (tree.size, tree.width) == (5, 2)
    forest = merge([tree, build_tree([[0, 5, 9]] * 3, [1] * 3)], 3, torch.device("cpu"), pad=-1)
    widths = [level.width for level in forest.levels]
    assert widths == [1, 2, 2]
    # the second image's narrower levels are padded; a padding row continues no row (-1)
    assert forest.levels[1].tokens.tolist() == [5, 8, 5, -1]
    assert forest.levels[1].parents is not None
    assert forest.levels[1].parents.tolist() == [0, 0, 1, -1]
    assert forest.levels[2].parents is not None
    assert forest.levels[2].parents.tolist() == [0, 0, -1, -1]
    assert forest.counts.tolist() == [3, 3, 1, 2, 2, 2]
    assert forest.levels[1].parents is not None  # the first image branches there
    assert not forest.shared  # two different trees: nothing is computed once for both
    assert merge([tree, tree], 3, torch.device("cpu")).shared


def test_the_tree_is_used_where_it_pays():
    small, full = decoder("captions"), decoder("full")
    pool = [c for c in CAPTIONS if c.startswith("a bag top left")] * 4  # shared prefixes
    unrelated = ["a sneaker", "an ankle boot top left, a shirt top right", "a coat"]

    def trees(dec, cands):
        ids = [dec._sequence(c, None) for c in cands]
        return [build_tree([s for s, _ in ids], [n for _, n in ids])] * 3

    assert small._tree_pays(trees(small, pool))
    assert not small._tree_pays(trees(small, unrelated))  # little shared, small output layer
    assert full._tree_pays(trees(full, unrelated))  # a 30,522-way output layer dominates
