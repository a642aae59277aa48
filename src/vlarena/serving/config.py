"""Settings of the serving side (Triton, its sync sidecar, the gateway's inference routes), read
from `VLARENA_*` environment variables like `vlarena.settings.Settings`."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from vlarena.settings import get_settings

MiB = 1024 * 1024


class ServingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VLARENA_", extra="ignore")

    triton_url: str = Field(
        default="127.0.0.1:8001", description="Triton's gRPC address (a Service in a cluster)."
    )
    triton_repository: Path | None = Field(
        default=None,
        description="This replica's model repository; default <artifact_dir>/triton/repository.",
    )
    triton_backend: Literal["python", "onnxruntime"] = Field(
        default="python",
        description="Backend the repository's configs name: python for the nvidia-pytriton "
        "server (local), onnxruntime for the Triton image (cluster).",
    )
    triton_instance_kind: Literal["KIND_CPU", "KIND_GPU"] = Field(default="KIND_CPU")
    triton_instance_count: int = Field(default=1, ge=1)
    triton_threads: int = Field(
        default=0, ge=0, description="onnxruntime intra-op threads per model instance; 0 = all."
    )
    triton_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Deadline of one Triton call from the gateway."
    )
    triton_pool_size: int = Field(
        default=2, ge=1, description="gRPC channels each gateway process keeps to Triton."
    )
    triton_sync_interval_seconds: float = Field(
        default=30.0, gt=0, description="Full resync period of `vlarena triton-sync`."
    )
    int8_weights: Literal["auto", "full", "reduced"] = Field(
        default="auto",
        description="Weight range of exported INT8 vision encoders: full (8-bit; GPUs, ARM and "
        "x86 CPUs with VNNI), reduced (7-bit; x86 CPUs without VNNI, whose u8×s8 kernels "
        "saturate), or auto (from the CPU of the machine that exports).",
    )
    serving_precision: Literal["fp32", "fp16", "int8"] = Field(
        default="fp32", description="Vision-encoder precision used when a request names none."
    )
    retry_after_seconds: int = Field(
        default=5, ge=1, description="Retry-After of a 503 while no replica has the model."
    )
    inference_max_image_bytes: int = Field(default=8 * MiB, ge=1024)
    inference_max_pixels: int = Field(default=4096 * 4096, ge=1, description="Per image.")
    inference_max_request_pixels: int = Field(
        default=64 * MiB,
        ge=1,
        description="Pixels of all the images of one request together: what decoding costs.",
    )
    inference_decode_threads: int = Field(
        default=4,
        ge=1,
        description="Threads of each gateway process that decode images, off the event loop.",
    )
    inference_max_batch: int = Field(default=32, ge=1, description="Images per request.")
    inference_max_candidates: int = Field(default=256, ge=2, description="Labels per request.")
    inference_max_text_chars: int = Field(default=1000, ge=1)
    inference_max_collection_items: int = Field(default=100_000, ge=1)

    @property
    def inference_max_body_bytes(self) -> int:
        """The body limit of the routes that take images: a full batch, base64-encoded."""
        return self.inference_max_image_bytes * self.inference_max_batch * 4 // 3 + 65536

    def repository(self) -> Path:
        return self.triton_repository or get_settings().artifact_dir / "triton" / "repository"


@lru_cache(maxsize=1)
def get_serving_settings() -> ServingSettings:
    return ServingSettings()
