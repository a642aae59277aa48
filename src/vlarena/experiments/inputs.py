"""What a run reads: the dataset of a spec, its splits, and each model's visual inputs
(cached features of a frozen X-encoder, or pixels)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from vlarena.data.errors import DataError
from vlarena.data.manifest import Dataset
from vlarena.data.registry import load_dataset
from vlarena.events import OnEvent, ProgressEvent
from vlarena.experiments.features import CHUNK, cached_features
from vlarena.experiments.runtime import configured_threads
from vlarena.jobs.confinement import Confinement
from vlarena.jobs.spec import DatasetSpec
from vlarena.models.base import VLModel


class EmptySplit(DataError):
    """A split a job needs holds no record."""


def open_dataset(dataset: DatasetSpec, confinement: Confinement | None = None) -> Dataset:
    """The whole dataset of a job spec: a built-in by name (with options) or a manifest, read
    under a submitted job's `confinement`."""
    if dataset.uri is not None:
        return load_dataset(dataset.uri, confinement=confinement)
    assert dataset.name is not None  # the spec holds exactly one of name and uri
    return load_dataset(dataset.name, **dataset.options)


@dataclass
class Splits:
    """A dataset and its train, validation and test splits."""

    full: Dataset
    train: Dataset
    val: Dataset
    test: Dataset

    @classmethod
    def for_training(cls, full: Dataset) -> Splits:
        """The splits a training run needs: train and test records, validation falling back
        to the test split."""
        splits = cls(full, full.split("train"), full.split("val"), full.split("test"))
        if not len(splits.train):
            raise EmptySplit(
                f"{full.manifest_path}: the train split is empty (records marked "
                f'"split": "train", or records without a split, train a model)'
            )
        if not len(splits.test):
            raise EmptySplit(f"{full.manifest_path}: the test split is empty")
        if not len(splits.val):
            splits.val = splits.test
        return splits

    @classmethod
    def for_evaluation(cls, full: Dataset, *, all_test: bool = False) -> Splits:
        """The splits an evaluation needs: only a test split, which is every record when
        `all_test` is set."""
        test = dataclasses.replace(full, split_name="test") if all_test else full.split("test")
        if not len(test):
            raise EmptySplit(
                f"{full.manifest_path}: the test split is empty (mark records "
                f'"split": "test", or evaluate with all records as test)'
            )
        return cls(full, full.split("train"), full.split("val"), test)


def visual_inputs(model: VLModel, ds: Dataset, full: Dataset, on_event: OnEvent) -> torch.Tensor:
    """What the model reads for each image of `ds`: cached features of a frozen X-encoder
    (computed once for the whole manifest), or pixels for a trainable one (decoded a chunk at a
    time, each reported as progress)."""
    enc = model.x_encoder
    if not enc.frozen:
        chunks = []
        for start in range(0, len(ds), CHUNK):
            part = dataclasses.replace(ds, records=ds.records[start : start + CHUNK])
            chunks.append(part.load_images(enc.image_size))
            on_event(ProgressEvent("load-data", start + len(part), len(ds), "images"))
        if not chunks:
            return torch.from_numpy(ds.load_images(enc.image_size))
        return torch.from_numpy(np.concatenate(chunks))

    def chunk(done: int, total: int) -> None:
        on_event(ProgressEvent("encode-features", done, total, "images"))

    table = cached_features(enc, full, num_threads=configured_threads(), on_chunk=chunk)
    return table.take(ds)
