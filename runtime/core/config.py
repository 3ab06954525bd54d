"""Frozen configurations: how an Engine runs, and named presets of edit parameters."""
from __future__ import annotations

import dataclasses

from cyclediff.runtime.core.checks import (
    InvalidArgument,
    check_choice,
    check_number,
    check_range,
    check_schedule_args,
)

BACKENDS = ("auto", "torch", "onnxruntime", "openvino", "tensorrt")
DTYPES = ("fp32", "fp16", "bf16")


@dataclasses.dataclass(frozen=True)
class EngineConfig:
    backend: str = "auto"
    device: str = "cpu"
    # Largest UNet batch the encoder sends at once: the K·B(·2) source evaluations are chunked by it.
    max_batch: int = 16
    progress: bool = True
    # "fp16": UNet and text encoder in fp16 (the VAE too, with an fp32 re-run on overflow); latents, recorded
    # noises and all scheduler math stay fp32 whatever this says. Meant for CUDA; on the CPU it is slow and
    # serves to check fp16 fidelity without a GPU. "bf16": the same policy in bfloat16, the fast CPU mode
    # (backend "openvino" on a CPU with AVX512_BF16 or AMX; "torch" too).
    dtype: str = "fp32"
    cuda_graphs: bool = True  # capture the UNet calls on CUDA (torch and TensorRT backends)
    # Cross-request batching: how long a batch may wait for other in-flight calls' UNet jobs (ms), and how
    # many calls may be in flight at once (each holds its own step buffers; more callers wait for a slot).
    batch_wait_ms: float = 5.0
    max_concurrency: int = 8
    # Working-memory budget (bytes, or "12GB"/"512MiB"); None: a safe fraction of the available RAM or GPU memory.
    max_memory: int | str | None = None

    def __post_init__(self):
        check_choice("backend", self.backend, BACKENDS)
        device = self.device if isinstance(self.device, str) else ""
        if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
            raise InvalidArgument("device", f"must be 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        check_choice("dtype", self.dtype, DTYPES)
        check_number("max_batch", self.max_batch, integer=True, low=1)
        check_number("max_concurrency", self.max_concurrency, integer=True, low=1)
        check_range("batch_wait_ms", self.batch_wait_ms, 0, 1000, open_low=False)


@dataclasses.dataclass(frozen=True)
class EditParams:
    """The numeric knobs of an edit, with diffusers' CycleDiffusionPipeline defaults."""

    strength: float = 0.8
    num_inference_steps: int = 50
    guidance_scale: float = 7.5
    source_guidance_scale: float = 1.0
    eta: float = 0.1

    def __post_init__(self):
        check_schedule_args(self.num_inference_steps, self.strength, self.eta)
        check_number("guidance_scale", self.guidance_scale)
        check_number("source_guidance_scale", self.source_guidance_scale)

    @property
    def source_scale(self) -> float:
        """The source guidance the encoder runs: CycleDiffusionPipeline runs the source branch unguided when
        guidance_scale <= 1, whatever source_guidance_scale says. The one place this rule lives."""
        return self.source_guidance_scale if self.guidance_scale > 1 else 1.0


# The diffusers defaults, and the two settings of the CycleDiffusion documentation's examples.
PRESETS: dict[str, EditParams] = {
    "default": EditParams(),
    "paper": EditParams(strength=0.8, num_inference_steps=100, guidance_scale=2.0, eta=0.1),
    "paper-strong": EditParams(strength=0.85, num_inference_steps=100, guidance_scale=3.0, eta=0.1),
}
