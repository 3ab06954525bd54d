"""Frozen configurations: how an Engine runs, and named presets of edit parameters."""
from __future__ import annotations

import dataclasses

from cyclediff.runtime.core.checks import check_number

BACKENDS = ("auto", "torch", "onnxruntime", "openvino", "tensorrt")
DTYPES = ("fp32", "fp16", "bf16")
OUTPUT_TYPES = ("pil", "np", "pt", "latent")


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
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        check_number("max_batch", self.max_batch, integer=True, low=1)
        check_number("max_concurrency", self.max_concurrency, integer=True, low=1)
        if isinstance(self.batch_wait_ms, bool) or not isinstance(self.batch_wait_ms, (int, float)) \
                or not 0 <= self.batch_wait_ms <= 1000:
            raise ValueError(f"batch_wait_ms must be a number of milliseconds in [0, 1000], got "
                             f"{self.batch_wait_ms!r}")


@dataclasses.dataclass(frozen=True)
class EditParams:
    """The numeric knobs of an edit, with diffusers' CycleDiffusionPipeline defaults."""

    strength: float = 0.8
    num_inference_steps: int = 50
    guidance_scale: float = 7.5
    source_guidance_scale: float = 1.0
    eta: float = 0.1

    def __post_init__(self):
        from cyclediff.runtime.core.schedule_args import check_schedule_args

        check_schedule_args(self.num_inference_steps, self.strength, self.eta)
        check_scale("guidance_scale", self.guidance_scale)
        check_scale("source_guidance_scale", self.source_guidance_scale)


def check_scale(name: str, value: float) -> None:
    check_number(name, value)


# The diffusers defaults, and the two settings of the CycleDiffusion documentation's examples.
PRESETS: dict[str, EditParams] = {
    "default": EditParams(),
    "paper": EditParams(strength=0.8, num_inference_steps=100, guidance_scale=2.0, eta=0.1),
    "paper-strong": EditParams(strength=0.85, num_inference_steps=100, guidance_scale=3.0, eta=0.1),
}


def check_output_args(output_type: str, callback_steps: int) -> None:
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
    if isinstance(callback_steps, bool) or not isinstance(callback_steps, int) or callback_steps < 1:
        raise ValueError(f"callback_steps must be a positive integer, got {callback_steps!r}")
