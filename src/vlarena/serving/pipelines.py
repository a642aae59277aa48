"""The model verbs over served graphs: embed, score, generate, with numpy and a tokenizer only.

This is where multi-step work lives: the gateway runs these pipelines, calling Triton once per
graph (and once per decoding step), so Triton serves nothing but the exported ONNX graphs.
Why here and not in a python-backend (BLS) model inside Triton:

- the same graphs then run unchanged on Triton's onnxruntime backend on GPUs in a cluster and
  in the python backend locally; no Python code needs to run inside the GPU server;
- the gateway already holds what the loop needs beside the graphs (the tokenizers and the
  vocabulary), scales out on cheap CPU nodes, and imports no torch;
- every decoding step is a plain request, so Triton's dynamic batcher batches the steps of
  concurrent captions together (equal shapes), and a slow caption holds no Triton instance;
- the price is one round trip per step with the KV cache on the wire: for the small preset
  (2 layers, 4 heads, 64 per head) that is 4 KiB per image per decoded token, on loopback or
  within a cluster network.

The same code runs over onnxruntime sessions in-process (`OnnxRunner`), which is how the
export checks its graphs against PyTorch before anything is served.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from functools import cached_property
from typing import Protocol, TypeVar, cast

import numpy as np
import tokenizers

from vlarena.data.tokenizer import Vocabulary, WordPieceTokenizer
from vlarena.serving.manifest import TOKENIZER_FILE, ServingManifest

Arrays = dict[str, np.ndarray]
T = TypeVar("T")
# Text embeddings a served model keeps (its labels and candidates come back request after
# request): 4,096 rows of a 384-d float32 embedding are 6 MiB.
TEXT_CACHE = 4096
# Runs a blocking callable off the caller's event loop (e.g. in a bounded thread pool).
Offload = Callable[[Callable[[], T]], Awaitable[T]]


class Runner(Protocol):
    """Runs one part's graph on a batch: a Triton client, or onnxruntime in-process."""

    async def run(
        self, part: str, precision: str, inputs: Arrays, outputs: Sequence[str]
    ) -> Arrays: ...


class OnnxRunner:
    """Runs an export directory's graphs with onnxruntime in this process."""

    def __init__(self, manifest: ServingManifest, num_threads: int = 0) -> None:
        self.manifest = manifest
        self.num_threads = num_threads
        self._sessions: dict[tuple[str, str], object] = {}

    def session(self, part: str, precision: str = "fp32"):
        import onnxruntime as ort

        key = (part, precision)
        if key not in self._sessions:
            options = ort.SessionOptions()
            if self.num_threads:
                options.intra_op_num_threads = self.num_threads
            self._sessions[key] = ort.InferenceSession(
                str(self.manifest.path_of(part, precision)),
                options,
                providers=["CPUExecutionProvider"],
            )
        return self._sessions[key]

    async def run(
        self, part: str, precision: str, inputs: Arrays, outputs: Sequence[str]
    ) -> Arrays:
        values = self.session(part, precision).run(list(outputs), inputs)  # type: ignore[attr-defined]
        return dict(zip(outputs, values, strict=True))


def _pad_rows(rows: Sequence[Sequence[int]], pad: int, width: int | None = None) -> np.ndarray:
    width = width if width is not None else max((len(r) for r in rows), default=0)
    out = np.full((len(rows), width), pad, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class ServedModel:
    """One exported model version's verbs, the same as the PyTorch model's (`score_candidates`,
    `generate`, `predict_embedding`, `encode_text`), over a `Runner`.

    Visual inputs are X-encoder tokens (B, N, C): `image_tokens` turns pixels into them.
    """

    def __init__(
        self,
        manifest: ServingManifest,
        runner: Runner,
        precision: str = "fp32",
        offload: Offload | None = None,
    ) -> None:
        self.manifest = manifest
        self.runner = runner
        self.precision = precision
        self.family = manifest.family
        self.offload = offload
        self._text_embeddings: OrderedDict[str, np.ndarray] = OrderedDict()

    async def _cpu(self, work: Callable[[], T]) -> T:
        """Runs CPU-bound work (tokenising texts) through `offload` when one is given, so that an
        event loop serving other requests (health probes included) does not wait for it."""
        if self.offload is None:
            return work()
        return await self.offload(work)

    # --- tokenizers -------------------------------------------------------------------------
    @cached_property
    def wordpiece(self) -> WordPieceTokenizer:
        """MiniLM's WordPiece tokenizer: the copy in the export, else the packaged model's."""
        directory = self.manifest.directory
        if directory is not None and (directory / TOKENIZER_FILE).is_file():
            return WordPieceTokenizer(directory / TOKENIZER_FILE)
        return WordPieceTokenizer.minilm()

    @cached_property
    def vocab(self) -> Vocabulary:
        return Vocabulary(self.wordpiece, self.manifest.vocabulary)

    @cached_property
    def minilm_tokenizer(self) -> tokenizers.Tokenizer:
        """MiniLM's tokenizer with its special tokens and truncation, as the Y-encoder calls it."""
        tokenizer = tokenizers.Tokenizer.from_file(str(self.wordpiece.path))
        tokenizer.no_padding()
        tokenizer.enable_truncation(self.manifest.text["minilmMaxLen"])
        return tokenizer

    # --- batching ---------------------------------------------------------------------------
    async def _run(self, part: str, inputs: Arrays, outputs: Sequence[str]) -> Arrays:
        """Runs `part` over any batch size: chunks of at most its max batch size, concurrently."""
        spec = self.manifest.parts[part]
        precision = self.precision if self.precision in spec.variants else "fp32"
        n = next(iter(inputs.values())).shape[0]
        step = spec.batching.max_batch_size
        if n <= step:
            return await self.runner.run(part, precision, inputs, outputs)
        chunks = await asyncio.gather(
            *(
                self.runner.run(
                    part, precision, {k: v[s : s + step] for k, v in inputs.items()}, outputs
                )
                for s in range(0, n, step)
            )
        )
        return {name: np.concatenate([c[name] for c in chunks]) for name in outputs}

    # --- verbs ------------------------------------------------------------------------------
    async def image_tokens(self, images: np.ndarray) -> np.ndarray:
        """Pixels (B, 3, S, S) in [-1, 1] → X-encoder tokens (B, N, C)."""
        out = await self._run("vision", {"images": images.astype(np.float32)}, ["tokens"])
        return out["tokens"]

    def _query_ids(self, queries: Sequence[str | None]) -> np.ndarray:
        """VL-JEPA's query ids (B, Tq), pad-padded; a row without a query is one pad id."""
        limit = self.manifest.text["maxQueryLen"]
        rows = [self.vocab.encode(q, bos=False, eos=False)[:limit] if q else [] for q in queries]
        return _pad_rows(rows, self.vocab.pad_id, max(1, max(map(len, rows), default=0)))

    async def predict_embedding(
        self, tokens: np.ndarray, queries: Sequence[str | None] | None = None
    ) -> np.ndarray:
        """VL-JEPA's predicted embeddings (B, D), unnormalised."""
        self._require("predictor")
        ids = await self._cpu(lambda: self._query_ids(queries or [None] * len(tokens)))
        out = await self._run("predictor", {"tokens": tokens, "query_ids": ids}, ["embedding"])
        return out["embedding"]

    async def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """VL-JEPA's target embeddings (B, D) of texts, unnormalised. The last TEXT_CACHE texts'
        embeddings are kept: a text encoded before is not sent to the text encoder again."""
        self._require("text_encoder")
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        cache = self._text_embeddings
        distinct = list(dict.fromkeys(texts))
        # Taken before any await: other requests may evict entries meanwhile.
        found = {t: cache[t] for t in distinct if t in cache}
        missing = [t for t in distinct if t not in found]
        if missing:
            encoded = await self._encode_text(missing)
            found.update((t, row.copy()) for t, row in zip(missing, encoded, strict=True))
        for text in distinct:
            cache[text] = found[text]
            cache.move_to_end(text)
        while len(cache) > TEXT_CACHE:
            cache.popitem(last=False)
        return np.stack([found[t] for t in texts])

    async def _encode_text(self, texts: Sequence[str]) -> np.ndarray:
        encodings = await self._cpu(lambda: self.minilm_tokenizer.encode_batch(list(texts)))
        # Rows are grouped by padded length (a multiple of 8), so similar texts batch together.
        by_width: dict[int, list[int]] = {}
        for i, e in enumerate(encodings):
            by_width.setdefault(-(-len(e.ids) // 8) * 8, []).append(i)
        parts = await asyncio.gather(
            *(
                self._run(
                    "text_encoder",
                    {
                        "input_ids": _pad_rows([encodings[i].ids for i in rows], 0, width),
                        "attention_mask": _pad_rows(
                            [encodings[i].attention_mask for i in rows], 0, width
                        ),
                    },
                    ["embedding"],
                )
                for width, rows in by_width.items()
            )
        )
        out: np.ndarray | None = None
        for rows, part in zip(by_width.values(), parts, strict=True):
            emb = part["embedding"]
            if out is None:
                out = np.empty((len(texts), emb.shape[1]), dtype=emb.dtype)
            out[rows] = emb
        assert out is not None
        return out

    async def score_candidates(
        self,
        tokens: np.ndarray,
        candidates: Sequence[str] | Sequence[Sequence[str]],
        queries: Sequence[str | None] | None = None,
    ) -> np.ndarray:
        """Scores (B, C): cosine (VL-JEPA) or mean token log-likelihood (token VLM)."""
        b = len(tokens)
        # `str` is itself a `Sequence[str]`: the isinstance check cannot narrow `candidates`.
        rows = (
            [list(cast(Sequence[str], candidates))] * b
            if isinstance(candidates[0], str)
            else [list(c) for c in candidates]
        )
        if self.family == "vl-jepa":
            pred = normalize(await self.predict_embedding(tokens, queries))
            distinct = list(dict.fromkeys(c for row in rows for c in row))
            index = {c: i for i, c in enumerate(distinct)}
            cand = normalize(await self.encode_text(distinct))
            picked = cand[np.array([[index[c] for c in row] for row in rows])]  # (B, C, D)
            return np.einsum("bd,bcd->bc", pred, picked)
        memory = (await self._run("decoder_memory", {"tokens": tokens}, ["memory"]))["memory"]
        seqs, prefix_lens, owners = await self._cpu(
            lambda: self._scored_sequences(rows, queries or [None] * b)
        )
        out = await self._run(
            "decoder_score",
            {
                "sequence_ids": _pad_rows(seqs, self.vocab.pad_id),
                "prefix_len": np.array(prefix_lens, dtype=np.int64)[:, None],
                "memory": memory[np.array(owners)],
            },
            ["score"],
        )
        return out["score"].reshape(b, len(rows[0]))

    def _scored_sequences(
        self, rows: list[list[str]], queries: Sequence[str | None]
    ) -> tuple[list[list[int]], list[int], list[int]]:
        """The token VLM's scored sequences (prefix, candidate, [SEP]) of every (image,
        candidate) pair, with each one's prefix length and image."""
        limit = self.manifest.text["maxTextLen"] + 1
        seqs, prefix_lens, owners = [], [], []
        for i, row in enumerate(rows):
            prefix = self._prefix(queries[i])
            for c in row:
                body = self.vocab.encode(c, bos=False, eos=False)
                seqs.append((prefix + body + [self.vocab.eos_id])[:limit])
                prefix_lens.append(len(prefix))
                owners.append(i)
        return seqs, prefix_lens, owners

    def _prefix(self, query: str | None) -> list[int]:
        """[CLS], then the query and [SEP] when there is one (`TextDecoder.prefix`)."""
        v = self.vocab
        return [v.bos_id] + ([*v.encode(query, bos=False, eos=False), v.eos_id] if query else [])

    async def generate(
        self,
        tokens: np.ndarray,
        queries: Sequence[str | None] | None = None,
        *,
        max_len: int = 32,
    ) -> list[str]:
        """Greedy text for each image: a caption, or the answer to its query."""
        if self.family == "vl-jepa":
            embedding = await self.predict_embedding(tokens, queries)
            return await self.decode_embeddings(embedding, max_len=max_len)
        cross = await self._run("decoder_memory", {"tokens": tokens}, ["cross_k", "cross_v"])
        asked = queries or [None] * len(tokens)
        prefixes = await self._cpu(lambda: [self._prefix(q) for q in asked])
        return await self._decode(cross["cross_k"], cross["cross_v"], prefixes, max_len)

    async def decode_embeddings(self, embedding: np.ndarray, *, max_len: int = 32) -> list[str]:
        """VL-JEPA's Y-decoder: text from embeddings (B, D)."""
        cross = await self._run(
            "decoder_memory", {"embedding": embedding.astype(np.float32)}, ["cross_k", "cross_v"]
        )
        prefixes = [[self.vocab.bos_id]] * len(embedding)
        return await self._decode(cross["cross_k"], cross["cross_v"], prefixes, max_len)

    async def _decode(
        self,
        cross_k: np.ndarray,
        cross_v: np.ndarray,
        prefixes: list[list[int]],
        max_len: int,
    ) -> list[str]:
        """Greedy decoding in groups of equal prefix length (`TextDecoder.generate`)."""
        step = self.manifest.parts["decoder_step"].batching.max_batch_size
        jobs, where = [], []
        for length in sorted({len(p) for p in prefixes}):
            rows = [i for i, p in enumerate(prefixes) if len(p) == length]
            for s in range(0, len(rows), step):
                chunk = rows[s : s + step]
                jobs.append(
                    self._greedy(
                        cross_k[chunk], cross_v[chunk], [prefixes[i] for i in chunk], max_len
                    )
                )
                where.append(chunk)
        texts: list[str] = [""] * len(prefixes)
        for chunk, ids in zip(where, await asyncio.gather(*jobs), strict=True):
            for i, row in zip(chunk, ids, strict=True):
                texts[i] = self.vocab.decode(row)
        return texts

    async def _greedy(
        self, cross_k: np.ndarray, cross_v: np.ndarray, prefixes: list[list[int]], max_len: int
    ) -> list[list[int]]:
        b, eos = len(prefixes), self.vocab.eos_id
        max_len = min(max_len, self.manifest.text["maxTextLen"] + 1 - len(prefixes[0]))
        past = np.zeros((*cross_k.shape[:3], 0, cross_k.shape[4]), dtype=np.float32)
        inputs: Arrays = {
            "input_ids": np.array(prefixes, dtype=np.int64),
            "past_k": past,
            "past_v": past,
            "cross_k": cross_k,
            "cross_v": cross_v,
        }
        names = ["logits", "present_k", "present_v"]
        out = await self._run("decoder_step", inputs, names)
        done = np.zeros(b, dtype=bool)
        tokens = []
        for step in range(max_len):
            nxt = np.where(done, eos, out["logits"][:, -1].argmax(-1))
            tokens.append(nxt)
            done |= nxt == eos
            if done.all() or step == max_len - 1:
                break
            inputs |= {
                "input_ids": nxt[:, None].astype(np.int64),
                "past_k": out["present_k"],
                "past_v": out["present_v"],
            }
            out = await self._run("decoder_step", inputs, names)
        return np.stack(tokens, 1).tolist() if tokens else [[] for _ in range(b)]

    def _require(self, part: str) -> None:
        if part not in self.manifest.parts:
            raise UnsupportedVerb(f"{self.family} models have no {part.replace('_', ' ')} graph")


class UnsupportedVerb(ValueError):
    """The model's family cannot do what was asked (e.g. embed text with a token VLM)."""
