"""Editing methods the sweep can evaluate. A method turns one triplet and one encoding's settings into
candidate images; add a method by writing a class with the same three members and registering it in METHODS.

`encodings` list the settings that share one inversion/encoding, `decodings` the ones made from it, and `run`
calls the engine. Latent-space guidance generates rather than edits an image, so it has no triplet method.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar, Protocol

import PIL.Image
import torch

from cyclediff.eval.grid import GridError, SweepGrid, product
from cyclediff.runtime.core.config import EditParams
from cyclediff.runtime.core.requests import DecodeRequest, EncodeRequest


class Method(Protocol):
    name: str
    options: dict[str, float]  # the method's own grid axes and their defaults (--option NAME=V1,V2)

    def encodings(self, grid: SweepGrid) -> list[dict[str, float]]:
        """Settings that each need their own encoding of the image (shared by every trial's decodes)."""

    def decodings(self, grid: SweepGrid) -> list[dict[str, float]]:
        """Settings decoded from one encoding."""

    def run(self, engine, image: PIL.Image.Image, source: str, target: str, encoding: dict[str, float],
            decodings: list[dict[str, float]], grid: SweepGrid, decoders: dict | None = None) -> torch.Tensor:
        """Images (len(decodings), trials, 3, H, W) on [0, 1]: decoding d of trial t at [d, t]. decoders: the
        Engines of the decoder axis by name (grid.decoders)."""


class CycleMethod:
    """CycleDiffusion: one DPM-Encoder pass per (strength, eta, source guidance) for all trials at once (one
    generator per trial: item t equals the single edit with seed t), then every guidance scale decoded from
    that code by concurrent engine.decode calls, whose UNet calls the engine merges into batched ones.

    source_guidance_scale applies to the encoding as given (Engine.edit, like diffusers, ignores it when
    guidance_scale <= 1)."""

    name = "cycle"
    options: ClassVar[dict[str, float]] = {"source_guidance_scale": 1.0}

    def encodings(self, grid: SweepGrid) -> list[dict[str, float]]:
        return product(strength=grid.strengths, eta=grid.etas,
                       source_guidance_scale=grid.option_values("source_guidance_scale", 1.0))

    def decodings(self, grid: SweepGrid) -> list[dict]:
        if not grid.decoders:
            return product(guidance_scale=grid.guidance_scales)
        return [{**d, "decoder": name} for name in grid.decoders for d in product(guidance_scale=grid.guidance_scales)]

    def run(self, engine, image, source, target, encoding, decodings, grid, decoders=None) -> torch.Tensor:
        """decoders: the decoder axis' Engines by name (a decoding's "decoder"); the code is A's, decoded there."""
        generators = [torch.Generator().manual_seed(s) for s in grid.seeds]
        code = engine.run(encode_request(image, source, encoding, grid, generators))
        targets = [target] * grid.trials

        def decode(d: dict) -> torch.Tensor:
            decoder = decoders[d["decoder"]] if "decoder" in d else engine
            return decoder.run(DecodeRequest(code, targets, d["guidance_scale"], "pt")).images

        with ThreadPoolExecutor(max(1, min(len(decodings), engine.config.max_concurrency))) as pool:
            return torch.stack([x.cpu() for x in pool.map(decode, decodings)])


def encode_request(image, source: str, encoding: dict[str, float], grid: SweepGrid, generators) -> EncodeRequest:
    """The request of one encoding of the sweep: every trial at once (item t: generator t)."""
    params = EditParams(encoding["strength"], grid.steps, 7.5, encoding["source_guidance_scale"], encoding["eta"])
    return EncodeRequest(image, source, params, generators, grid.trials)


class Pix2PixZeroMethod:
    """Pix2Pix-Zero: the source text is the image's caption (the inversion's and the edit's prompt) and the edit
    direction is CLIP(target) − CLIP(source) of the triplet's two texts. One inversion per trial (its seed drives
    the regularizer's random rolls), reused by every guidance scale and cross-attention guidance amount; eta is
    the edit's DDIM eta (diffusers' default 0). Strength does not apply: the inversion covers every step, so the
    rows record strength 1. Amounts > 0 run the guided step, which needs --backend torch."""

    name = "pix2pix-zero"
    options: ClassVar[dict[str, float]] = {"cross_attention_guidance_amount": 0.1}

    def __init__(self):
        # The last input's inversions: every eta (an encoding axis, for the table's columns) edits from the
        # same ones. One sweep calls run() from one thread, one input after another.
        self._inverted: tuple[tuple, list] | None = None

    def encodings(self, grid: SweepGrid) -> list[dict[str, float]]:
        if grid.decoders:
            raise GridError("--decoder-engine decodes CycleDiffusion codes; it does not apply to --method "
                            "pix2pix-zero")
        if len(grid.strengths) != 1:
            raise GridError("--strength does not apply to --method pix2pix-zero (it inverts the whole schedule); "
                            "give one value or leave it out")
        return product(strength=(1.0,), eta=grid.etas)

    def decodings(self, grid: SweepGrid) -> list[dict[str, float]]:
        return product(guidance_scale=grid.guidance_scales,
                       cross_attention_guidance_amount=grid.option_values("cross_attention_guidance_amount", 0.1))

    def run(self, engine, image, source, target, encoding, decodings, grid, decoders=None) -> torch.Tensor:
        direction = engine.edit_direction([source], [target])
        codes = self._inversions(engine, image, source, grid)

        def edit(d: dict[str, float], code, seed: int) -> torch.Tensor:
            return engine.pix2pix_zero(source, direction.source_embeds, direction.target_embeds,
                                       num_inference_steps=grid.steps, guidance_scale=d["guidance_scale"],
                                       eta=encoding["eta"], generator=torch.Generator().manual_seed(seed),
                                       latents=code, output_type="pt",
                                       cross_attention_guidance_amount=d["cross_attention_guidance_amount"],
                                       ).images[0].cpu()

        return torch.stack([torch.stack([edit(d, c, s) for c, s in zip(codes, grid.seeds)]) for d in decodings])

    def _inversions(self, engine, image, source: str, grid: SweepGrid) -> list:
        key = (id(image), source, grid.steps, grid.seeds)
        if self._inverted is None or self._inverted[0] != key:
            self._inverted = (key, [engine.invert(source, image, num_inference_steps=grid.steps, output_type=None,
                                                  generator=torch.Generator().manual_seed(s)) for s in grid.seeds])
        return self._inverted[1]


METHODS: dict[str, type] = {"cycle": CycleMethod, "pix2pix-zero": Pix2PixZeroMethod}


def get_method(name: str, grid_options: tuple[tuple[str, tuple[float, ...]], ...] = ()) -> Method:
    """The method called `name`, after checking that every --option is one of its own."""
    if name not in METHODS:
        raise GridError(f"unknown --method {name!r}; available: {', '.join(METHODS)}")
    method = METHODS[name]()
    for option, _ in grid_options:
        if option not in method.options:
            known = ", ".join(method.options) or "none"
            raise GridError(f"unknown method option {option!r} for --method {name}; its options are: {known}")
    return method
