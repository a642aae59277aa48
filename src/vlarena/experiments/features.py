"""Features of frozen X-encoders, computed once per dataset through onnxruntime and cached on disk."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from vlarena.data.images import load_images
from vlarena.data.locations import cache_dir
from vlarena.data.manifest import Dataset
from vlarena.files import atomic_path
from vlarena.models.x_encoders import XEncoder

log = logging.getLogger(__name__)

CHUNK = 128  # images decoded and encoded at a time: bounds memory on large datasets


class FeatureTable:
    """Visual tokens (N, T, C) of every record of a manifest, fp16, looked up by record id."""

    def __init__(self, features: np.ndarray, ids: list[str]) -> None:
        self.features = features
        self.row = {rid: i for i, rid in enumerate(ids)}

    def rows(self, dataset: Dataset) -> np.ndarray:
        return np.array([self.row[r.id] for r in dataset.records], dtype=np.int64)

    def take(self, dataset: Dataset) -> torch.Tensor:
        """The features of `dataset`'s records, in its order, as float32."""
        return torch.from_numpy(self.features[self.rows(dataset)].astype(np.float32))


def _atomic_save(path: Path, array: np.ndarray) -> None:
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, array)


def encoder_onnx_session(encoder: XEncoder, num_threads: int = 0):
    """An onnxruntime session running `encoder`'s graph (exported once, cached by its cache key).

    The eager EfficientNet runs ~45 images/s on 2 CPU cores; the same graph through
    onnxruntime runs ~300/s, which turns minutes of feature extraction into seconds.
    """
    import onnxruntime as ort

    from vlarena.serving.graphs import x_encoder_graph

    path = x_encoder_graph(encoder)
    opts = ort.SessionOptions()
    if num_threads:
        opts.intra_op_num_threads = num_threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def frame_encoder(encoder: XEncoder, num_threads: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """A function from images (N, 3, S, S) to the frozen `encoder`'s visual tokens, through the
    same onnxruntime graph the feature cache uses."""
    session = encoder_onnx_session(encoder, num_threads)
    return lambda images: session.run(None, {"images": images})[0]


def encode_images(
    encoder: XEncoder,
    paths: list[str],
    *,
    num_threads: int = 0,
    on_chunk: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Visual tokens of the images at `paths` as fp16 (N, T, C), through onnxruntime."""
    session = encoder_onnx_session(encoder, num_threads)
    out = np.empty((len(paths), encoder.num_tokens, encoder.out_dim), dtype=np.float16)
    for start in range(0, len(paths), CHUNK):
        batch = load_images(paths[start : start + CHUNK], encoder.image_size)
        out[start : start + len(batch)] = session.run(None, {"images": batch})[0]
        if on_chunk:
            on_chunk(start + len(batch), len(paths))
    return out


def cached_features(
    encoder: XEncoder,
    dataset: Dataset,
    *,
    num_threads: int = 0,
    on_chunk: Callable[[int, int], None] | None = None,
) -> FeatureTable:
    """The frozen `encoder`'s features of every record in `dataset`'s manifest, cached on disk."""
    if not encoder.frozen:
        raise TypeError("only a frozen encoder's features can be cached")
    ids = [r.id for r in dataset.records]
    # A subset of a manifest keeps its fingerprint: the record ids tell such caches apart.
    ids_hash = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:12]
    root = cache_dir() / "features" / f"{encoder.cache_key()}-{dataset.fingerprint()}-{ids_hash}"
    feats_path, ids_path = root / "features.npy", root / "ids.npy"
    if feats_path.exists() and ids_path.exists():
        try:
            return FeatureTable(np.load(feats_path), [str(i) for i in np.load(ids_path)])
        except (OSError, ValueError, EOFError) as err:  # damaged on disk: computed again
            log.warning("feature cache %s cannot be read (%s); encoding again", root, err)
    started = time.perf_counter()
    feats = encode_images(
        encoder, [r.image for r in dataset.records], num_threads=num_threads, on_chunk=on_chunk
    )
    _atomic_save(ids_path, np.array(ids))
    _atomic_save(feats_path, feats)  # written last: its presence marks a complete cache
    log.info(
        "encoded %d images with %s in %.1f s",
        len(ids),
        encoder.cache_key(),
        time.perf_counter() - started,
    )
    return FeatureTable(feats, ids)
