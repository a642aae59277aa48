"""Datasets for vlarena: JSONL manifests, the built-ins, images as arrays, tokenizers."""

from vlarena.data.errors import DataError, DataUnavailableError, ImageError, ManifestError
from vlarena.data.export import export_dataset
from vlarena.data.images import load_image, load_images
from vlarena.data.locations import cache_dir, emoji_dir, fashion_mnist_dir
from vlarena.data.manifest import (
    SPLITS,
    Dataset,
    DatasetInfo,
    Question,
    Record,
    load_manifest,
    write_manifest,
)
from vlarena.data.registry import builtin_names, export_builtin, load_dataset
from vlarena.data.templates import fill_caption, fill_label, with_article
from vlarena.data.tokenizer import Vocabulary, WordPieceTokenizer

__all__ = [
    "SPLITS",
    "DataError",
    "DataUnavailableError",
    "Dataset",
    "DatasetInfo",
    "ImageError",
    "ManifestError",
    "Question",
    "Record",
    "Vocabulary",
    "WordPieceTokenizer",
    "builtin_names",
    "cache_dir",
    "emoji_dir",
    "export_builtin",
    "export_dataset",
    "fashion_mnist_dir",
    "fill_caption",
    "fill_label",
    "load_dataset",
    "load_image",
    "load_images",
    "load_manifest",
    "with_article",
    "write_manifest",
]
