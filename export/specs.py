"""The four exported models' I/O declarations: names, tensor specs, dimensions, output shapes. Read by export,
engines and runtime; no torch here, so that a CLI's `--help` and the manifest do not import it."""
from __future__ import annotations

import dataclasses
import re

TEXT_ENCODER, UNET, VAE_ENCODER, VAE_DECODER = "text_encoder", "unet", "vae_encoder", "vae_decoder"
MODEL_NAMES = (TEXT_ENCODER, UNET, VAE_ENCODER, VAE_DECODER)


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One graph input/output: name, dtype, symbolic shape ('B', 'H', 'W', 'h', 'w' or an int per axis)."""

    name: str
    dtype: str  # "float32" | "int64"
    shape: tuple[str | int, ...]


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """torch.onnx's dynamic_axes: every symbolic dimension of every input and output."""
        return {
            t.name: {i: d for i, d in enumerate(t.shape) if isinstance(d, str)} for t in self.inputs + self.outputs
        }


@dataclasses.dataclass(frozen=True)
class Dims:
    """The checkpoint's fixed sizes that the symbolic shapes refer to."""

    text_len: int  # 77
    text_width: int  # D: 768 for SD v1
    text_states: int  # L + 1 hidden states (embeddings + each layer)
    latent_channels: int  # 4
    vae_scale: int  # 8 for SD v1: image side / latent side
    # Latent sides must be multiples of this (8 for SD v1): the UNet halves them this many times over and
    # an exported graph bakes in the upsampling for exact multiples.
    unet_downscale: int = 1

    @classmethod
    def of(cls, text_encoder, vae, unet=None) -> "Dims":
        return cls(
            unet_downscale=2 ** (len(unet.config.block_out_channels) - 1) if unet is not None else 1,
            text_len=text_encoder.config.max_position_embeddings,
            text_width=text_encoder.config.hidden_size,
            text_states=text_encoder.config.num_hidden_layers + 1,
            latent_channels=vae.config.latent_channels,
            vae_scale=2 ** (len(vae.config.block_out_channels) - 1),
        )


def specs(d: Dims) -> dict[str, ModelSpec]:
    lat = ("B", d.latent_channels, "h", "w")
    return {
        TEXT_ENCODER: ModelSpec(
            TEXT_ENCODER,
            (TensorSpec("input_ids", "int64", ("B", d.text_len)),),
            # Final layer norm applied to every hidden state: index -1 is last_hidden_state, index
            # -(k+1) is what diffusers' clip_skip=k uses.  (B, L+1, 77, D)
            (TensorSpec("hidden_states", "float32", ("B", d.text_states, d.text_len, d.text_width)),),
        ),
        UNET: ModelSpec(
            UNET,
            (
                TensorSpec("sample", "float32", lat),
                TensorSpec("timestep", "float32", ("B",)),  # per-sample: the encoder batches over timesteps
                TensorSpec("encoder_hidden_states", "float32", ("B", d.text_len, d.text_width)),
            ),
            (TensorSpec("noise_pred", "float32", lat),),
        ),
        VAE_ENCODER: ModelSpec(
            VAE_ENCODER,
            (TensorSpec("image", "float32", ("B", 3, "H", "W")),),
            (TensorSpec("mean", "float32", lat), TensorSpec("std", "float32", lat)),
        ),
        VAE_DECODER: ModelSpec(
            VAE_DECODER,
            (TensorSpec("latent", "float32", lat),),  # already divided by the scaling factor
            (TensorSpec("image", "float32", ("B", 3, "H", "W")),),
        ),
    }


def output_shapes(spec: ModelSpec, inputs: dict[str, tuple[int, ...]], d: Dims) -> dict[str, tuple[int, ...]]:
    """Concrete output shapes for concrete input shapes: bind the symbols, then substitute."""
    env: dict[str, int] = {}
    for t in spec.inputs:
        for sym, size in zip(t.shape, inputs[t.name]):
            if isinstance(sym, str):
                env[sym] = size
    if "H" in env:
        env.setdefault("h", env["H"] // d.vae_scale)
        env.setdefault("w", env["W"] // d.vae_scale)
    if "h" in env:
        env.setdefault("H", env["h"] * d.vae_scale)
        env.setdefault("W", env["w"] * d.vae_scale)
    return {t.name: tuple(_size(s, env) if isinstance(s, str) else s for s in t.shape) for t in spec.outputs}


def _size(symbol: str, env: dict[str, int]) -> int:
    """A symbol ('B') or a derived one, left to right with exact integer division ('B*8', 'h*w/16': the
    attention-map outputs of export/attention_maps.py)."""
    terms = re.split(r"([*/])", symbol)
    value = _term(terms[0], env)
    for op, term in zip(terms[1::2], terms[2::2]):
        value = value * _term(term, env) if op == "*" else value // _term(term, env)
    return value


def _term(term: str, env: dict[str, int]) -> int:
    return int(term) if term.isdigit() else env[term]
