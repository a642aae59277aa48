"""Greedy decoding with a KV cache gives the same tokens and logits as re-running the prefix."""

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlarena.nn import KVCache, SinusoidalPositionalEncoding, TransformerDecoder

VOCAB, D, H, FF, LAYERS, STEPS = 23, 32, 4, 64, 2, 12


class TinyCaptioner(nn.Module):
    """A random image-conditioned LM: token embedding, positions, decoder, output projection."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, D)
        self.pos = SinusoidalPositionalEncoding(D, max_len=32)
        self.decoder = TransformerDecoder(LAYERS, D, H, FF)
        self.head = nn.Linear(D, VOCAB)
        # Spread the logits so that greedy choices are not near-ties.
        nn.init.normal_(self.head.weight, std=1.0)

    def forward(
        self,
        tokens: Tensor,
        memory: Tensor,
        memory_pad: Tensor,
        cache: KVCache | None = None,
        token_pad: Tensor | None = None,
    ) -> Tensor:
        offset = 0 if cache is None else cache.length
        x = self.pos(self.embed(tokens), offset)  # (B, T, D)
        h, _ = self.decoder(
            x, memory, self_padding_mask=token_pad, memory_padding_mask=memory_pad, cache=cache
        )
        return self.head(h[:, -1])  # (B, VOCAB)


def _setup(batch: int = 3) -> tuple[TinyCaptioner, Tensor, Tensor, Tensor]:
    torch.manual_seed(0)
    model = TinyCaptioner().eval()
    memory = torch.randn(batch, 6, D)
    memory_pad = torch.zeros(batch, 6, dtype=torch.bool)
    memory_pad[1, 4:] = True
    prompt = torch.randint(VOCAB, (batch, 3))
    return model, memory, memory_pad, prompt


def _greedy(
    model: TinyCaptioner,
    prompt: Tensor,
    memory: Tensor,
    memory_pad: Tensor,
    steps: int,
    cache: KVCache | None = None,
    token_pad: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The generated tokens (B, steps) and their logits (B, steps, VOCAB)."""
    tokens, fed = prompt, prompt
    logits = []
    for _ in range(steps):
        step_logits = model(fed, memory, memory_pad, cache=cache, token_pad=token_pad)
        logits.append(step_logits)
        next_token = step_logits.argmax(-1, keepdim=True)  # (B, 1)
        tokens = torch.cat([tokens, next_token], dim=1)
        # With a cache only the new token goes in; without one, the whole prefix again.
        fed = tokens if cache is None else next_token
        if token_pad is not None:
            token_pad = F.pad(token_pad, (0, 1), value=False)
    return tokens[:, prompt.size(1) :], torch.stack(logits, dim=1)


@torch.no_grad()
def test_greedy_decoding_with_cache_equals_decoding_without() -> None:
    model, memory, memory_pad, prompt = _setup()
    want_tokens, want_logits = _greedy(model, prompt, memory, memory_pad, STEPS)
    cache = KVCache(LAYERS)
    got_tokens, got_logits = _greedy(model, prompt, memory, memory_pad, STEPS, cache)
    assert torch.equal(got_tokens, want_tokens)
    torch.testing.assert_close(got_logits, want_logits, atol=1e-5, rtol=0)
    # The prompt and every generated token but the last are cached.
    assert cache.length == prompt.size(1) + STEPS - 1


@torch.no_grad()
def test_left_padded_prompts_decode_the_same_with_cache() -> None:
    model, memory, memory_pad, prompt = _setup()
    token_pad = torch.zeros_like(prompt, dtype=torch.bool)
    token_pad[0, :2] = True
    want_tokens, want_logits = _greedy(model, prompt, memory, memory_pad, STEPS, None, token_pad)
    got_tokens, got_logits = _greedy(
        model, prompt, memory, memory_pad, STEPS, KVCache(LAYERS), token_pad
    )
    assert not want_logits.isnan().any()
    assert torch.equal(got_tokens, want_tokens)
    torch.testing.assert_close(got_logits, want_logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "index", [torch.tensor([2, 0, 1]), torch.tensor([0, 0, 1, 1, 2, 2])], ids=["permute", "expand"]
)
@torch.no_grad()
def test_reordered_cache_follows_its_batch(index: Tensor) -> None:
    model, memory, memory_pad, prompt = _setup()
    cache = KVCache(LAYERS)
    first, _ = _greedy(model, prompt, memory, memory_pad, 4, cache)
    cache.reorder(index)
    prefix = torch.cat([prompt, first], dim=1)[index]
    memory, memory_pad = memory[index], memory_pad[index]
    # The cache holds all of the prefix but its last token, which goes in next.
    got_tokens, got_logits = _greedy(model, prefix[:, -1:], memory, memory_pad, STEPS - 4, cache)
    want_tokens, want_logits = _greedy(model, prefix, memory, memory_pad, STEPS - 4)
    assert torch.equal(got_tokens, want_tokens)
    torch.testing.assert_close(got_logits, want_logits, atol=1e-5, rtol=0)


def test_reordering_a_fresh_cache_leaves_it_empty() -> None:
    cache = KVCache(LAYERS)
    cache.reorder(torch.tensor([1, 0]))
    assert cache.length == 0
    assert cache.cross(0) is None


def test_a_prefix_cache_keeps_each_rows_prefix_in_its_slot_copying_only_new_branches() -> None:
    from vlarena.nn import PrefixCache

    torch.manual_seed(0)
    cache = PrefixCache(n_layers=2, max_len=6)  # no rows given: it grows when branches need it
    prefixes: list[list[Tensor]] = [[] for _ in range(2)]  # per row: its k at each position
    levels = [
        None,
        torch.tensor([0, 0, 1]),  # row 0 branches
        torch.tensor([1, 2, 0, 0, -1]),  # a permutation, a branch and a padding row
        torch.tensor([3, 0]),  # rows end: the survivors keep their slots
        torch.tensor([1, 1, 1, 1]),  # one row branches four ways: more slots than ever held
    ]
    for t, parents in enumerate(levels):
        if parents is not None:
            kept = cache.slots.clone() if cache.slots is not None else None
            cache.reorder(parents)
            prefixes = [list(prefixes[p]) if p >= 0 else [] for p in parents.tolist()]
            if kept is not None and t == 3:
                assert cache.slots.tolist() == kept[[3, 0]].tolist()  # nothing moved
        k = torch.randn(len(prefixes), 2, 1, 4)
        for layer in range(2):
            keys, values = cache.append(layer, k + layer, -k)
            assert keys.shape[2] == t + 1 and len(keys) == cache.capacity >= len(prefixes)
            rows = cache.to_rows(keys)
            for row, prefix in enumerate(prefixes):
                if parents is not None and parents[row] < 0:
                    continue  # a padding row's prefix is nobody's
                want = torch.cat([*prefix, k[row]], dim=1) if prefix else k[row]
                torch.testing.assert_close(rows[row], want + layer)
            torch.testing.assert_close(cache.to_rows(values)[:, :, t], -k[:, :, 0])
        prefixes = [[*p, k[i]] for i, p in enumerate(prefixes)]
        # Queries placed in their slots come back in row order.
        q = torch.randn(len(prefixes), 3)
        assert torch.equal(cache.to_rows(cache.to_slots(q)), q)
        cache.advance()
