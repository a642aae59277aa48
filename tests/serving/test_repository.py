"""The Triton model repository writer and the sync plan, without a server."""

from __future__ import annotations

from pathlib import Path

from vlarena.serving.manifest import PartSpec, ServingManifest, triton_model_name
from vlarena.serving.repository import Batching, ModelConfig, ModelRepository, TensorSpec
from vlarena.serving.sync import plan, write_plan

IMAGES = TensorSpec("images", "TYPE_FP32", (3, 128, 128))
TOKENS = TensorSpec("tokens", "TYPE_FP32", (16, 1280))


def test_config_for_the_python_backend_batches_dynamically_on_cpu():
    text = ModelConfig(
        "m.vision",
        (IMAGES,),
        (TOKENS,),
        Batching(32, (8, 16, 32), 2000),
        (1, 3),
        intra_op_threads=2,
    ).to_pbtxt()
    assert 'name: "m.vision"' in text and 'backend: "python"' in text
    assert "max_batch_size: 32" in text
    assert "version_policy: { specific: { versions: [1, 3] } }" in text
    assert '{ name: "images" data_type: TYPE_FP32 dims: [3, 128, 128] }' in text
    assert "preferred_batch_size: [8, 16, 32]" in text
    assert "max_queue_delay_microseconds: 2000" in text
    assert "kind: KIND_CPU count: 1" in text
    assert 'key: "intra_op_threads" value: { string_value: "2" }' in text
    # A batching model's threads sleep between operators instead of spinning.
    assert 'key: "allow_spinning" value: { string_value: "0" }' in text
    unbatched = ModelConfig("m.vision", (IMAGES,), (TOKENS,), Batching(8, None, 0)).to_pbtxt()
    assert 'key: "allow_spinning" value: { string_value: "1" }' in unbatched


def test_config_for_the_onnxruntime_backend_runs_on_gpus_without_batching():
    text = ModelConfig(
        "m.vision",
        (IMAGES,),
        (TOKENS,),
        Batching(8, None, 0),
        (),
        backend="onnxruntime",
        instance_kind="KIND_GPU",
        instance_count=2,
    ).to_pbtxt()
    assert 'backend: "onnxruntime"' in text and 'default_model_filename: "model.onnx"' in text
    assert "dynamic_batching" not in text
    assert "latest: { num_versions: 1 }" in text
    assert "kind: KIND_GPU count: 2" in text


def test_versions_are_added_whole_and_once(tmp_path: Path):
    graph = tmp_path / "g.onnx"
    graph.write_bytes(b"onnx")
    repo = ModelRepository(tmp_path / "repo")
    assert repo.add_version("m.vision", 2, graph)
    assert not repo.add_version("m.vision", 2, graph)
    assert (tmp_path / "repo" / "m.vision" / "2" / "model.py").is_file()  # the python backend
    assert repo.versions("m.vision") == [2]
    config = repo.config("m.vision", (IMAGES,), (TOKENS,), Batching(), (2,))
    assert repo.write_config(config) and not repo.write_config(config)
    assert repo.models() == ["m.vision"]
    repo.remove_version("m.vision", 2)
    assert repo.versions("m.vision") == []
    repo.remove_model("m.vision")
    assert repo.models() == []
    onnx_repo = ModelRepository(tmp_path / "gpu", backend="onnxruntime")
    onnx_repo.add_version("m.vision", 1, graph)
    assert not (tmp_path / "gpu" / "m.vision" / "1" / "model.py").exists()


def _manifest(directory: Path, tokens: int) -> ServingManifest:
    directory.mkdir()
    for name in ("vision.onnx", "vision.int8.onnx"):
        (directory / name).write_bytes(name.encode())
    out = TensorSpec("tokens", "TYPE_FP32", (tokens, 1280))
    part = PartSpec(
        "vision", "vision.onnx", (IMAGES,), (out,), Batching(), {"int8": "vision.int8.onnx"}
    )
    return ServingManifest("vl-jepa", 128, {"vision": part}, [0], {}, directory=directory)


def test_plan_serves_each_version_and_widens_dims_they_disagree_on(tmp_path: Path):
    v1, v2 = _manifest(tmp_path / "v1", 16), _manifest(tmp_path / "v2", 9)
    desired = plan({"m": {1: v1, 2: v2}})
    assert set(desired) == {triton_model_name("m", "vision"), "m.vision.int8"}
    vision = desired["m.vision"]
    assert vision.files == {1: v1.path_of("vision"), 2: v2.path_of("vision")}
    assert vision.outputs[0].dims == (-1, 1280)
    repo = ModelRepository(tmp_path / "repo")
    assert write_plan(repo, desired) == {"m.vision", "m.vision.int8"}
    assert write_plan(repo, desired) == set()
    assert repo.versions("m.vision.int8") == [1, 2]
    del desired["m.vision"].files[1]
    assert write_plan(repo, desired) == {"m.vision"}
    assert repo.versions("m.vision") == [2]
