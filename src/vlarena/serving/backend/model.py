"""A Triton python-backend model that runs the ONNX graph beside it with onnxruntime.

Where a Triton build has only its python backend (the `nvidia-pytriton` wheel's server) this
file, copied into each version directory next to `model.onnx`, serves the same graph that
Triton's onnxruntime backend serves in a cluster. The python backend hands `execute` every
request of a dynamic batch separately: requests whose inputs agree in every dimension but the
first are concatenated and run as one batch, then split again.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in (config.get("parameters") or {}).items()}
        version_dir = Path(args["model_repository"]) / args["model_version"]
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_threads", "0"))
        options.inter_op_num_threads = 1
        # Threads that spin between operators answer a batch-of-one sooner; a batching model
        # lets them sleep instead, leaving the cores to the server that forms its next batch.
        options.add_session_config_entry(
            "session.intra_op.allow_spinning", params.get("allow_spinning", "1")
        )
        self.session = ort.InferenceSession(
            str(version_dir / params.get("onnx_file", "model.onnx")),
            options,
            providers=["CPUExecutionProvider"],
        )
        self.inputs = [spec["name"] for spec in config["input"]]
        self.outputs = [spec["name"] for spec in config["output"]]

    def execute(self, requests: list) -> list:
        responses: list = [None] * len(requests)
        groups: dict[tuple, list[tuple[int, list[np.ndarray], list[str]]]] = {}
        for index, request in enumerate(requests):
            arrays = [pb_utils.get_input_tensor_by_name(request, n).as_numpy() for n in self.inputs]
            key = tuple((a.shape[1:], a.dtype.str) for a in arrays)
            wanted = list(request.requested_output_names()) or self.outputs
            groups.setdefault(key, []).append((index, arrays, wanted))
        for members in groups.values():
            wanted = [n for n in self.outputs if any(n in m[2] for m in members)]
            try:
                feeds = {
                    name: np.concatenate([m[1][k] for m in members])
                    if len(members) > 1
                    else members[0][1][k]
                    for k, name in enumerate(self.inputs)
                }
                results = dict(zip(wanted, self.session.run(wanted, feeds), strict=True))
            except Exception as exc:  # a bad request fails alone, the model stays up
                error = pb_utils.TritonError(f"{type(exc).__name__}: {exc}")
                for index, _, _ in members:
                    responses[index] = pb_utils.InferenceResponse(output_tensors=[], error=error)
                continue
            start = 0
            for index, arrays, names in members:
                stop = start + arrays[0].shape[0]
                tensors = [
                    pb_utils.Tensor(n, np.ascontiguousarray(results[n][start:stop])) for n in names
                ]
                responses[index] = pb_utils.InferenceResponse(output_tensors=tensors)
                start = stop
        return responses
