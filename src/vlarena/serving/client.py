"""Async gRPC access to Triton: a small pool of channels, inference with a deadline, and errors
sorted into "try again later" (no replica has the model ready, Triton unreachable or slow) and
"this request is wrong"."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence

import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from vlarena.serving.manifest import triton_model_name

Arrays = dict[str, np.ndarray]

# gRPC statuses that mean "not now" rather than "not this request".
_RETRYABLE = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "NOT_FOUND", "RESOURCE_EXHAUSTED", "CANCELLED")
_NOT_READY = ("unknown model", "is not found", "not ready", "is not loaded", "no version")


class ServingUnavailable(Exception):
    """Triton cannot answer now (down, slow, or the model is not loaded on it yet)."""

    def __init__(self, message: str, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServingFailed(Exception):
    """Triton rejected or failed the request itself."""


def _classify(exc: InferenceServerException, model: str, version: int) -> Exception:
    status = str(exc.status() or "")
    message = exc.message() or str(exc)
    lowered = message.lower()
    if any(s in status for s in _RETRYABLE) or any(s in lowered for s in _NOT_READY):
        if "DEADLINE_EXCEEDED" in status:
            return ServingUnavailable(f"Triton did not answer {model} v{version} in time")
        if any(s in lowered for s in _NOT_READY) or "NOT_FOUND" in status:
            return ServingUnavailable(f"{model} version {version} is not loaded on Triton yet")
        return ServingUnavailable(f"Triton is unavailable: {message}")
    return ServingFailed(f"{model} v{version}: {message}")


class TritonPool:
    """`size` gRPC channels to one Triton address (a Service in a cluster), used round-robin.

    Channels are opened on first use, inside the event loop that uses them.
    """

    def __init__(self, url: str, size: int = 2, timeout_s: float = 10.0) -> None:
        self.url = url
        self.size = max(1, size)
        self.timeout_s = timeout_s
        self._clients: list[grpcclient.InferenceServerClient] = []
        self._next = itertools.count()

    def client(self) -> grpcclient.InferenceServerClient:
        if not self._clients:
            self._clients = [grpcclient.InferenceServerClient(self.url) for _ in range(self.size)]
        return self._clients[next(self._next) % self.size]

    async def infer(
        self, model: str, version: int, inputs: Arrays, outputs: Sequence[str]
    ) -> Arrays:
        """Runs `model` (a Triton model name) at `version`; raises ServingUnavailable or
        ServingFailed, never waits past the pool's timeout."""
        tensors = []
        for name, array in inputs.items():
            array = np.ascontiguousarray(array)
            tensor = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        wanted = [grpcclient.InferRequestedOutput(name) for name in outputs]
        try:
            result = await asyncio.wait_for(
                self.client().infer(
                    model,
                    tensors,
                    model_version=str(version),
                    outputs=wanted,
                    client_timeout=self.timeout_s,
                ),
                self.timeout_s + 1,
            )
        except InferenceServerException as exc:
            raise _classify(exc, model, version) from None
        except TimeoutError:
            raise ServingUnavailable(f"Triton did not answer {model} v{version} in time") from None
        return {name: result.as_numpy(name) for name in outputs}

    async def model_ready(self, model: str, version: int) -> bool:
        try:
            return bool(
                await asyncio.wait_for(
                    self.client().is_model_ready(model, str(version)), self.timeout_s
                )
            )
        except (InferenceServerException, TimeoutError):
            return False

    async def close(self) -> None:
        clients, self._clients = self._clients, []
        for client in clients:
            await client.close()


class TritonRunner:
    """A `pipelines.Runner` for one registered model version served by Triton."""

    def __init__(self, pool: TritonPool, model: str, version: int) -> None:
        self.pool = pool
        self.model = model
        self.version = version

    async def run(
        self, part: str, precision: str, inputs: Arrays, outputs: Sequence[str]
    ) -> Arrays:
        name = triton_model_name(self.model, part, precision)
        return await self.pool.infer(name, self.version, inputs, outputs)
