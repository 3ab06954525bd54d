"""Pix2Pix-Zero's edit: the reference and guided trajectories, stepped in lockstep on a torch UNet.

The reference trajectory (caption embeddings) yields each step's cross-attention maps; the edit trajectory
(caption + direction) takes one gradient step on its UNet input per timestep towards them. The reference map of
step t is needed only at step t, so running both trajectories together holds one step's maps instead of all
of them (diffusers stores every step's). Numerics are the reference's; only the input gradient is computed.
"""
from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator

import torch

from cyclediff.engine.base import ModelRunner
from cyclediff.runtime.core import denoise
from cyclediff.runtime.core.model_gate import ModelGate
from cyclediff.runtime.core.schedule import StepTable
from cyclediff.runtime.methods.pix2pix_zero import attention_probe
from cyclediff.runtime.methods.pix2pix_zero.attention_probe import Probe
from cyclediff.runtime.methods.pix2pix_zero.reference_maps import ProbeMaps

TRAJECTORIES = ("lockstep", "store-all")


@dataclasses.dataclass(frozen=True)
class GuidanceText:
    """embeds: (g, 77, D), rows [negative, caption] with guidance (g = 2) or [caption]; edit: embeds with the
    direction added to row 1 (diffusers' `prompt_embeds_edit[1:2] += direction`: a no-op when g = 1)."""

    embeds: torch.Tensor
    edit: torch.Tensor
    guidance_scale: float

    @property
    def groups(self) -> int:
        return int(self.embeds.shape[0])


class TorchUNet:
    """Direct calls on the torch backend's UNet module (UNetGraph), with attn2 probes installed."""

    def __init__(self, module: torch.nn.Module, compute: torch.dtype):
        self.module, self.compute = module, compute
        self.local = attention_probe.install(module.unet)

    def __call__(self, sample: torch.Tensor, t: int, embeds: torch.Tensor, probe: Probe) -> torch.Tensor:
        """sample (g, C, h, w) fp32 -> noise prediction (g, C, h, w) fp32; differentiable in `sample`."""
        timestep = torch.full((sample.shape[0],), float(t), device=sample.device)
        with attention_probe.opened(self.local, probe):
            out = self.module(sample.to(self.compute), timestep, embeds.to(self.compute))
        return out.float()


class GuidedEditor:
    """Runs the two trajectories. `forward` is a forward-only UNet runner (the engine's dispatched one) for the
    plain noise prediction after each guided update. `reference` gives a reference step's prediction and maps
    (reference_maps.py: the export's unet_attn graph on any backend); None: probes on `unet`."""

    def __init__(self, unet: TorchUNet, forward: ModelRunner, amount: float, trajectory: str = "lockstep",
                 reference=None, gate: ModelGate | None = None):
        if trajectory not in TRAJECTORIES:
            raise ValueError(f"trajectory must be one of {TRAJECTORIES}, got {trajectory!r}")
        self.unet, self.forward, self.amount, self.trajectory = unet, forward, float(amount), trajectory
        self.reference = reference if reference is not None else ProbeMaps(unet)
        # The torch UNet's calls (the gradient step; the reference pass without unet_attn) take the dispatcher's
        # path through the gate: the caller's cancel check first, then alone (never beside another model call).
        self.gate = gate
        self.peak_map_bytes = 0  # most reference-map bytes held at once (for the memory comparison)

    def run(self, latents: torch.Tensor, table: StepTable, text: GuidanceText, noises: torch.Tensor | None,
            callback: Callable | None = None, callback_steps: int = 1, progress=None) -> torch.Tensor:
        """latents (1, C, h, w); noises (2K, 1, C, h, w) for eta > 0 (reference draws first, as diffusers) or
        None -> the edited latents (1, C, h, w). `callback` sees the reference trajectory, as in diffusers."""
        k = table.num_steps
        ref, x = latents.clone(), latents.clone()
        coefs = table.coefficients(latents.device)

        def reference(i: int) -> list[torch.Tensor]:
            maps = self._reference_step(ref, i, table, coefs, text, None if noises is None else noises[i])
            if callback is not None and i % callback_steps == 0:
                callback(i, table.timesteps[i], ref)
            return maps

        if self.trajectory == "lockstep":
            for i in range(k):
                self._edit_step(x, i, reference(i), table, coefs, text, None if noises is None else noises[k + i])
                _tick(progress)
            return x
        stored = [reference(i) for i in range(k)]
        for i in range(k):
            self.peak_map_bytes = max(self.peak_map_bytes, sum(_nbytes(m) for m in stored if m is not None))
            maps, stored[i] = stored[i], None  # type: ignore[call-overload]
            self._edit_step(x, i, maps, table, coefs, text, None if noises is None else noises[k + i])
            _tick(progress)
        return x

    def _reference_step(self, ref, i, table, coefs, text: GuidanceText, z) -> list[torch.Tensor]:
        # The export's unet_attn graph is a dispatched runner (it checks and queues itself); the probes run the
        # torch UNet, through the gate.
        torch_ref = isinstance(self.reference, ProbeMaps)
        with self._gated() if torch_ref else contextlib.nullcontext():
            pred, maps = self.reference(ref.expand(text.groups, -1, -1, -1), int(table.timesteps[i]), text.embeds)
        _ddim(ref, pred, i, coefs, text, z)
        self.peak_map_bytes = max(self.peak_map_bytes, _nbytes(maps))
        return maps

    def _edit_step(self, x, i, maps, table, coefs, text: GuidanceText, z) -> None:
        t = int(table.timesteps[i])
        x_in = x.expand(text.groups, -1, -1, -1).detach().clone().requires_grad_(True)
        probe = Probe(maps)
        with self._gated(), torch.enable_grad():  # forward and backward: one turn of the dispatcher
            self.unet(x_in, t, text.edit, probe)
            (grad,) = torch.autograd.grad(probe.loss, x_in)
        # One SGD step (lr = cross_attention_guidance_amount). The halves get different gradients: the second
        # forward sees both updated halves, and the carried latent is the updated FIRST (unconditional) half.
        guided = x_in.detach().add_(grad, alpha=-self.amount)
        pred = torch.empty_like(guided)
        self.forward({"sample": guided, "timestep": torch.full((text.groups,), float(t), device=x.device),
                      "encoder_hidden_states": text.edit}, {"noise_pred": pred})
        x.copy_(guided[:1])
        _ddim(x, pred, i, coefs, text, z)

    @contextlib.contextmanager
    def _gated(self) -> Iterator[None]:
        """The caller's cancel check, then the block alone on the dispatcher (no gate: as is, for unit tests)."""
        if self.gate is None:
            yield
            return
        self.gate.check()
        with self.gate.hold():
            yield


def plain_edit(forward: ModelRunner, latents: torch.Tensor, table: StepTable, text: GuidanceText,
               noises: torch.Tensor | None, progress=None) -> torch.Tensor:
    """cross_attention_guidance_amount = 0: the guided update is x − 0·∇ = x, so the edit is a plain DDIM loop
    with the edited embeddings (any backend); the reference trajectory only fed the callback."""
    x, coefs, k = latents.clone(), table.coefficients(latents.device), table.num_steps
    sample = x.new_empty((text.groups, *x.shape[1:]))  # (g, C, h, w): x once per text group
    pred = torch.empty_like(sample)
    for i in range(k):
        t = torch.full((text.groups,), float(table.timesteps[i]), device=x.device)
        denoise.predict(forward, x, sample, t, text.edit, pred)
        _ddim(x, pred, i, coefs, text, None if noises is None else noises[k + i])
        _tick(progress)
    return x


def _ddim(x: torch.Tensor, pred: torch.Tensor, i: int, c: dict, text: GuidanceText, z) -> None:
    """x ← DDIM step of x (1, C, h, w) with the guided prediction of pred (g, C, h, w)."""
    eps, tmp, mean = torch.empty_like(x), torch.empty_like(x), torch.empty_like(x)
    scale = text.guidance_scale if text.groups == 2 else None
    denoise.step(x, pred, scale, z, denoise.at(c, i), eps, mean, tmp)


def _nbytes(maps) -> int:
    return sum(m.numel() * m.element_size() for m in maps) if maps else 0


def _tick(progress) -> None:
    if progress is not None:
        progress.update(1)
