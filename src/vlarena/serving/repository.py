"""A Triton model repository on disk: `<root>/<model>/config.pbtxt` and numeric version
directories holding `model.onnx`, with version policy, dynamic batching and instance groups.

The same graphs serve in both kinds of Triton: `backend="onnxruntime"` (the cluster's Triton
image, KIND_GPU) loads `model.onnx` itself; `backend="python"` (the `nvidia-pytriton` wheel's
server, which has no other backend) puts vlarena's python-backend model beside the graph, and it
runs the graph with onnxruntime.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from vlarena.files import atomic_write_text

Backend = Literal["python", "onnxruntime"]
InstanceKind = Literal["KIND_CPU", "KIND_GPU"]

ONNX_FILE = "model.onnx"
PYTHON_MODEL_FILE = "model.py"
CONFIG_FILE = "config.pbtxt"
# ONNX element types (onnx.TensorProto) as Triton data types.
TRITON_TYPES = {1: "TYPE_FP32", 10: "TYPE_FP16", 7: "TYPE_INT64", 6: "TYPE_INT32", 9: "TYPE_BOOL"}


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: its name, Triton data type and dims without the batch axis
    (-1 for a variable one)."""

    name: str
    data_type: str
    dims: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dataType": self.data_type, "dims": list(self.dims)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TensorSpec:
        return cls(data["name"], data["dataType"], tuple(int(d) for d in data["dims"]))


@dataclass(frozen=True)
class Batching:
    """Batch size limit and Triton's dynamic batcher (None: every request runs alone)."""

    max_batch_size: int = 32
    preferred_batch_sizes: tuple[int, ...] | None = (8, 16, 32)
    max_queue_delay_us: int = 2000

    @property
    def dynamic(self) -> bool:
        return self.preferred_batch_sizes is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "maxBatchSize": self.max_batch_size,
            "preferredBatchSizes": list(self.preferred_batch_sizes)
            if self.preferred_batch_sizes is not None
            else None,
            "maxQueueDelayMicroseconds": self.max_queue_delay_us,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Batching:
        preferred = data.get("preferredBatchSizes")
        return cls(
            int(data["maxBatchSize"]),
            tuple(preferred) if preferred is not None else None,
            int(data.get("maxQueueDelayMicroseconds", 0)),
        )


@dataclass(frozen=True)
class ModelConfig:
    """What `config.pbtxt` says about one Triton model."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    batching: Batching = field(default_factory=Batching)
    versions: tuple[int, ...] = ()
    backend: Backend = "python"
    instance_kind: InstanceKind = "KIND_CPU"
    instance_count: int = 1
    intra_op_threads: int = 0

    def to_pbtxt(self) -> str:
        """The config in protobuf text format."""
        lines = [f'name: "{self.name}"', f'backend: "{self.backend}"']
        lines.append(f"max_batch_size: {self.batching.max_batch_size}")
        if self.versions:
            versions = ", ".join(str(v) for v in sorted(self.versions))
            lines.append(f"version_policy: {{ specific: {{ versions: [{versions}] }} }}")
        else:
            lines.append("version_policy: { latest: { num_versions: 1 } }")
        if self.backend == "onnxruntime":
            lines.append(f'default_model_filename: "{ONNX_FILE}"')
        for key, specs in (("input", self.inputs), ("output", self.outputs)):
            body = ",\n".join(
                f'  {{ name: "{s.name}" data_type: {s.data_type} dims: [{", ".join(map(str, s.dims))}] }}'
                for s in specs
            )
            lines.append(f"{key} [\n{body}\n]")
        if self.batching.dynamic:
            preferred = ", ".join(str(b) for b in self.batching.preferred_batch_sizes or ())
            lines.append(
                "dynamic_batching {\n"
                f"  preferred_batch_size: [{preferred}]\n"
                f"  max_queue_delay_microseconds: {self.batching.max_queue_delay_us}\n"
                "}"
            )
        lines.append(
            f"instance_group [ {{ kind: {self.instance_kind} count: {self.instance_count} }} ]"
        )
        params = {"onnx_file": ONNX_FILE, "allow_spinning": "0" if self.batching.dynamic else "1"}
        if self.intra_op_threads:
            params["intra_op_threads"] = str(self.intra_op_threads)
        if self.backend == "python":
            for key, value in params.items():
                lines.append(f'parameters: {{ key: "{key}" value: {{ string_value: "{value}" }} }}')
        elif self.intra_op_threads:
            lines.append(
                'parameters: { key: "intra_op_thread_count" value: { string_value: '
                f'"{self.intra_op_threads}" }} }}'
            )
        return "\n".join(lines) + "\n"


def python_backend_model() -> Path:
    """vlarena's python-backend model file, shipped as package data."""
    return Path(str(resources.files("vlarena.serving") / "backend" / PYTHON_MODEL_FILE))


class ModelRepository:
    """Writes and prunes one Triton model repository."""

    def __init__(
        self,
        root: Path,
        *,
        backend: Backend = "python",
        instance_kind: InstanceKind = "KIND_CPU",
        instance_count: int = 1,
        intra_op_threads: int = 0,
    ) -> None:
        self.root = Path(root)
        self.backend = backend
        self.instance_kind = instance_kind
        self.instance_count = instance_count
        self.intra_op_threads = intra_op_threads

    def models(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / CONFIG_FILE).is_file())

    def versions(self, model: str) -> list[int]:
        directory = self.root / model
        if not directory.is_dir():
            return []
        return sorted(
            int(p.name)
            for p in directory.iterdir()
            if p.name.isdigit() and (p / ONNX_FILE).exists()
        )

    def add_version(self, model: str, version: int, graph: Path) -> bool:
        """Copies `graph` in as `<model>/<version>/model.onnx` (with the python-backend model
        when that is the backend); False when that version is there already."""
        target = self.root / model / str(version)
        if (target / ONNX_FILE).exists():
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        # Copied beside the target and renamed, so Triton never sees half a version.
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{version}."))
        staging.chmod(0o755)  # mkdtemp's 0700 would hide the version from a server of another uid
        try:
            shutil.copyfile(graph, staging / ONNX_FILE)
            if self.backend == "python":
                shutil.copyfile(python_backend_model(), staging / PYTHON_MODEL_FILE)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return True

    def remove_version(self, model: str, version: int) -> None:
        shutil.rmtree(self.root / model / str(version), ignore_errors=True)

    def remove_model(self, model: str) -> None:
        shutil.rmtree(self.root / model, ignore_errors=True)

    def config(
        self,
        model: str,
        inputs: tuple[TensorSpec, ...],
        outputs: tuple[TensorSpec, ...],
        batching: Batching,
        versions: tuple[int, ...],
    ) -> ModelConfig:
        return ModelConfig(
            name=model,
            inputs=inputs,
            outputs=outputs,
            batching=batching,
            versions=versions,
            backend=self.backend,
            instance_kind=self.instance_kind,
            instance_count=self.instance_count,
            intra_op_threads=self.intra_op_threads,
        )

    def write_config(self, config: ModelConfig) -> bool:
        """Writes `<model>/config.pbtxt`; False when it already says the same."""
        path = self.root / config.name / CONFIG_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        text = config.to_pbtxt()
        if path.is_file() and path.read_text() == text:
            return False
        atomic_write_text(path, text)
        return True
