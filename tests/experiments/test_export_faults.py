"""Exports replace their directory whole: a re-export that fails part-way leaves the previous
export as it was (replicas may be copying it) and nothing half-written under its name."""

from __future__ import annotations

from pathlib import Path

import pytest

import vlarena.files
from vlarena.data.images import load_images
from vlarena.errors import UserInputError
from vlarena.files import atomic_directory
from vlarena.models.registry import build_model, make_config
from vlarena.serving import export, graphs
from vlarena.training.examples import ExampleSource


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "rename-aside"])
def test_a_directory_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(vlarena.files, "_exchange", lambda a, b: False)
    target = tmp_path / "export"
    target.mkdir()
    (target / "old.onnx").write_bytes(b"old")

    with pytest.raises(RuntimeError), atomic_directory(target) as staging:
        (staging / "new.onnx").write_bytes(b"half")
        raise RuntimeError("crashed mid-write")
    assert _tree(target) == {"old.onnx": b"old"}
    assert [p.name for p in tmp_path.iterdir()] == ["export"]

    with atomic_directory(target) as staging:
        (staging / "sub").mkdir()
        (staging / "sub" / "new.onnx").write_bytes(b"new")
        assert _tree(target) == {"old.onnx": b"old"}  # unchanged until complete
    assert _tree(target) == {"sub/new.onnx": b"new"}
    assert [p.name for p in tmp_path.iterdir()] == ["export"]


def test_a_failed_re_export_leaves_the_previous_export_intact(tiny_splits, tmp_path, monkeypatch):
    source = ExampleSource(tiny_splits.train, 0.25)
    model = build_model("token-vlm", make_config("token-vlm", {"preset": "tiny"}), source.texts())
    out = tmp_path / "export"
    out.mkdir()
    previous = {
        "serving.json": b'{"schema": 1}',
        "vision.onnx": b"old",
        "decoder_step.onnx": b"old",
    }
    for name, data in previous.items():
        (out / name).write_bytes(data)

    def fail(*_args, **_kwargs):  # after the vision, memory and step graphs were written
        raise RuntimeError("injected mid-export")

    monkeypatch.setattr(graphs, "export_decoder_score", fail)
    size = model.x_encoder.image_size
    calibration = load_images([r.image for r in tiny_splits.train.records[:2]], size)
    with pytest.raises(RuntimeError, match="injected"):
        export.export_model(
            model, out, calibration_images=calibration, test=tiny_splits.test, accuracy_images=0
        )
    assert _tree(out) == previous
    assert [p.name for p in tmp_path.iterdir()] == ["export"]


def test_an_export_refuses_a_directory_that_holds_other_files(tiny_splits, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    source = ExampleSource(tiny_splits.train, 0.25)
    model = build_model("token-vlm", make_config("token-vlm", {"preset": "tiny"}), source.texts())
    calibration = load_images([r.image for r in tiny_splits.train.records[:2]], 32)
    with pytest.raises(UserInputError, match=r"holds files but no serving\.json"):
        export.export_model(model, tmp_path, calibration_images=calibration, test=tiny_splits.test)
    assert (tmp_path / "notes.txt").read_text() == "mine"
