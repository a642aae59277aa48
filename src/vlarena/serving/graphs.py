"""The parts of a trained model as traceable modules, and their export to ONNX graphs.

One graph per part, every one with a dynamic batch axis first (Triton batches along it):

| part | inputs → outputs |
|---|---|
| `vision` | images (B, 3, S, S) in [-1, 1] → tokens (B, N, C): the X-encoder |
| `predictor` (VL-JEPA) | tokens, query_ids (B, Tq) → embedding (B, D), unnormalised |
| `text_encoder` (VL-JEPA) | input_ids, attention_mask (B, T) → embedding (B, D): MiniLM + head |
| `decoder_memory` | tokens (token VLM) or embedding (VL-JEPA's Y-decoder) → memory (B, M, d) and the cross-attention keys/values cross_k, cross_v (B, L, nh, M, hs) |
| `decoder_step` | input_ids (B, T), past_k, past_v (B, L, nh, P, hs), cross_k, cross_v → logits (B, T, V), present_k, present_v (B, L, nh, P+T, hs) |
| `decoder_score` (token VLM) | sequence_ids (B, T+1), prefix_len (B, 1), memory → score (B, 1): mean token log-likelihood |

The decoder step is the KV cache made explicit: the wrapper fills a `KVCache` from its inputs and
runs the model's own `TextDecoder.forward`, so the graph is the eager code path, traced.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import torch
from torch import Tensor, nn

from vlarena.data.locations import cache_dir
from vlarena.files import atomic_path
from vlarena.models.text_decoder import IGNORE, TextDecoder
from vlarena.models.token_vlm import TokenVLM
from vlarena.models.vl_jepa import VLJEPA, YDecoder, YEncoder
from vlarena.models.x_encoders import XEncoder
from vlarena.nn import DecoderBlock, KVCache

OPSET = 17


def export_graph(
    module: nn.Module,
    args: tuple[Tensor, ...],
    path: Path,
    inputs: dict[str, dict[int, str]],
    outputs: dict[str, dict[int, str]],
) -> Path:
    """Traces `module` on `args` into an ONNX file at `path` (written atomically).

    `inputs`/`outputs` map each tensor's name to its dynamic axes ({axis: name}).
    """
    with atomic_path(path, suffix=".onnx") as tmp, warnings.catch_warnings(), torch.no_grad():
        # Tracing warns about Python values taken from shapes; the parity tests are the check.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            args,
            str(tmp),
            input_names=list(inputs),
            output_names=list(outputs),
            dynamic_axes={**inputs, **outputs},
            opset_version=OPSET,
            dynamo=False,
        )
    return path


# --- the X-encoder ------------------------------------------------------------------------------
def export_x_encoder(encoder: XEncoder, path: Path) -> Path:
    """The X-encoder's graph: images (B, 3, S, S) → tokens (B, N, C)."""
    size = encoder.image_size
    return export_graph(
        encoder,
        (torch.zeros(1, 3, size, size),),
        path,
        {"images": {0: "batch"}},
        {"tokens": {0: "batch"}},
    )


def x_encoder_graph(encoder: XEncoder) -> Path:
    """A frozen X-encoder's graph, exported once per encoder and kept in the cache directory."""
    path = cache_dir() / "encoders" / f"{encoder.cache_key()}.onnx"
    if not path.exists():
        export_x_encoder(encoder, path)
    return path


# --- VL-JEPA ------------------------------------------------------------------------------------
class PredictorGraph(nn.Module):
    """tokens (B, N, C), query_ids (B, Tq) → predicted embedding (B, D).

    Query ids equal to the pad id are masked out of attention and pooling, so a row without a
    query is sent as one pad id, and rows of a batch may be padded to a common length.
    """

    def __init__(self, model: VLJEPA) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: Tensor, query_ids: Tensor) -> Tensor:
        m = self.model
        v = m.projector(tokens)  # (B, N, d)
        q_pad = query_ids == m.vocab.pad_id
        x = torch.cat([v, m.query_pos(m.query_emb(query_ids))], 1)  # (B, N+Tq, d)
        pad = torch.cat([torch.zeros_like(v[..., 0], dtype=torch.bool), q_pad], 1)
        h, _ = m.predictor(x, key_padding_mask=pad)
        keep = (~pad).unsqueeze(-1).to(h.dtype)
        return m.pred_head((h * keep).sum(1) / keep.sum(1))  # (B, D)


class TextEncoderGraph(nn.Module):
    """MiniLM token ids and attention mask (B, T) → target embedding (B, D): the Y-encoder's
    backbone (MiniLM, or one trained from scratch reading the same ids) mean-pooled over real
    tokens, then the trained head, as `YEncoder.forward` computes it."""

    def __init__(self, y_encoder: YEncoder) -> None:
        super().__init__()
        self.backbone = y_encoder.backbone
        self.head = y_encoder.head

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.head(self.backbone.encode_ids(input_ids, attention_mask))  # (B, D)


# --- decoders (the token VLM's text decoder and VL-JEPA's Y-decoder) ---------------------------
def _decoder_blocks(text: TextDecoder) -> list[DecoderBlock]:
    """The decoder's layers: `DecoderBlock`s, which its `nn.ModuleList` types as plain modules."""
    return cast(list[DecoderBlock], list(text.decoder.layers))


def cross_keys_values(text: TextDecoder, memory: Tensor) -> tuple[Tensor, Tensor]:
    """The cross-attention keys and values of every layer, (B, L, nh, M, hs) each."""
    ks, vs = [], []
    for block in _decoder_blocks(text):
        attn = block.cross_attn
        ks.append(attn._split_heads(attn.k_proj(memory)))
        vs.append(attn._split_heads(attn.v_proj(memory)))
    return torch.stack(ks, 1), torch.stack(vs, 1)


class TokenMemoryGraph(nn.Module):
    """The token VLM: tokens (B, N, C) → memory (B, N, d), cross_k, cross_v."""

    def __init__(self, model: TokenVLM) -> None:
        super().__init__()
        self.projector = model.projector
        self.text = model.text

    def forward(self, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        memory = self.projector(tokens)
        return (memory, *cross_keys_values(self.text, memory))


class EmbeddingMemoryGraph(nn.Module):
    """VL-JEPA's Y-decoder: embedding (B, D) → memory (B, P, d), cross_k, cross_v."""

    def __init__(self, y_decoder: YDecoder) -> None:
        super().__init__()
        self.y_decoder = y_decoder

    def forward(self, embedding: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        memory = self.y_decoder.memory(embedding)
        return (memory, *cross_keys_values(self.y_decoder.text, memory))


class DecoderStepGraph(nn.Module):
    """One incremental decoding call with the KV cache as tensors (see the module docstring)."""

    def __init__(self, text: TextDecoder) -> None:
        super().__init__()
        self.text = text

    def forward(
        self, input_ids: Tensor, past_k: Tensor, past_v: Tensor, cross_k: Tensor, cross_v: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        cache = KVCache(self.text.n_layers)
        for layer in range(self.text.n_layers):
            cache.self_kv[layer] = (past_k[:, layer], past_v[:, layer])
            cache.set_cross(layer, cross_k[:, layer], cross_v[:, layer])
        # The cross-attention keys/values are cached, so the memory itself is never read.
        logits, _ = self.text(input_ids, None, cache=cache)  # type: ignore[arg-type]
        present_k = torch.stack([k for k, _ in cache.self_kv], 1)  # type: ignore[misc]
        present_v = torch.stack([v for _, v in cache.self_kv], 1)  # type: ignore[misc]
        return logits, present_k, present_v


class DecoderScoreGraph(nn.Module):
    """Mean token log-likelihood of whole sequences `[CLS] (query [SEP]) text [SEP]` (B, T+1),
    right-padded, of which the first `prefix_len` tokens are given, not predicted."""

    def __init__(self, text: TextDecoder) -> None:
        super().__init__()
        self.text = text

    def forward(self, sequence_ids: Tensor, prefix_len: Tensor, memory: Tensor) -> Tensor:
        inputs, targets = sequence_ids[:, :-1], sequence_ids[:, 1:]
        positions = torch.arange(targets.shape[1], device=targets.device)[None]  # (1, T)
        given = positions < prefix_len - 1  # (B, T): the query is given (TextDecoder.sequences)
        labels = targets.masked_fill(given | (targets == self.text.vocab.pad_id), IGNORE)
        return self.text.token_logprobs(inputs, labels, memory)[:, None]  # (B, 1)


# --- example inputs ------------------------------------------------------------------------------
def step_example(text: TextDecoder, memory_len: int, past: int = 2) -> tuple[Tensor, ...]:
    """Inputs to trace a decoder step with: two new tokens after `past` cached ones."""
    attn = _decoder_blocks(text)[0].self_attn
    d = text.tok_emb.embedding_dim
    shape = (1, text.n_layers, attn.n_heads, past, d // attn.n_heads)
    cross = (1, text.n_layers, attn.n_heads, memory_len, d // attn.n_heads)
    ids = torch.full((1, 2), text.vocab.bos_id, dtype=torch.long)
    return ids, torch.zeros(shape), torch.zeros(shape), torch.zeros(cross), torch.zeros(cross)


STEP_AXES_IN = {
    "input_ids": {0: "batch", 1: "new"},
    "past_k": {0: "batch", 3: "past"},
    "past_v": {0: "batch", 3: "past"},
    "cross_k": {0: "batch", 3: "memory"},
    "cross_v": {0: "batch", 3: "memory"},
}
STEP_AXES_OUT = {
    "logits": {0: "batch", 1: "new"},
    "present_k": {0: "batch", 3: "total"},
    "present_v": {0: "batch", 3: "total"},
}
MEMORY_AXES_OUT = {
    "memory": {0: "batch"},
    "cross_k": {0: "batch"},
    "cross_v": {0: "batch"},
}


def export_decoder_step(text: TextDecoder, memory_len: int, path: Path) -> Path:
    return export_graph(
        DecoderStepGraph(text), step_example(text, memory_len), path, STEP_AXES_IN, STEP_AXES_OUT
    )


def export_decoder_score(text: TextDecoder, memory_len: int, path: Path) -> Path:
    d = text.tok_emb.embedding_dim
    seq = torch.tensor([[text.vocab.bos_id, text.vocab.eos_id, text.vocab.eos_id]])
    return export_graph(
        DecoderScoreGraph(text),
        (seq, torch.ones(1, 1, dtype=torch.long), torch.zeros(1, memory_len, d)),
        path,
        {
            "sequence_ids": {0: "batch", 1: "length"},
            "prefix_len": {0: "batch"},
            "memory": {0: "batch"},
        },
        {"score": {0: "batch"}},
    )


def export_token_memory(model: TokenVLM, path: Path) -> Path:
    enc = model.x_encoder
    return export_graph(
        TokenMemoryGraph(model),
        (torch.zeros(1, enc.num_tokens, enc.out_dim),),
        path,
        {"tokens": {0: "batch"}},
        MEMORY_AXES_OUT,
    )


def export_embedding_memory(model: VLJEPA, path: Path) -> Path:
    return export_graph(
        EmbeddingMemoryGraph(model.y_decoder),
        (torch.ones(1, model.cfg.embed_dim),),
        path,
        {"embedding": {0: "batch"}},
        MEMORY_AXES_OUT,
    )


def export_predictor(model: VLJEPA, path: Path) -> Path:
    enc = model.x_encoder
    query = torch.full((1, 2), model.vocab.pad_id, dtype=torch.long)
    return export_graph(
        PredictorGraph(model),
        (torch.zeros(1, enc.num_tokens, enc.out_dim), query),
        path,
        {"tokens": {0: "batch"}, "query_ids": {0: "batch", 1: "query"}},
        {"embedding": {0: "batch"}},
    )


def export_text_encoder(model: VLJEPA, path: Path) -> Path:
    ids = torch.tensor([[101, 1037, 102]])
    return export_graph(
        TextEncoderGraph(model.y_encoder),
        (ids, torch.ones_like(ids)),
        path,
        {"input_ids": {0: "batch", 1: "length"}, "attention_mask": {0: "batch", 1: "length"}},
        {"embedding": {0: "batch"}},
    )


def part_names(family: str) -> Sequence[str]:
    """The graphs a model of `family` exports, in pipeline order."""
    if family == "token-vlm":
        return ("vision", "decoder_memory", "decoder_step", "decoder_score")
    if family == "vl-jepa":
        return ("vision", "predictor", "text_encoder", "decoder_memory", "decoder_step")
    raise ValueError(f"no serving graphs for model family {family!r}")
