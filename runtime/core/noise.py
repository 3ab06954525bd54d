"""Random draws with diffusers' `randn_tensor` semantics, so a seed gives the reference's exact noise."""
from __future__ import annotations

import torch

Generators = torch.Generator | list[torch.Generator] | None


class NoiseSource:
    """Draws standard normals for a batch of `batch` items, in the reference's order and shapes.

    One generator: each draw is one (n, ...) tensor. A list: generator i draws item i's (1, ...) slice,
    so item i of a batch sees exactly the draws of a single edit seeded with generator i.
    """

    def __init__(self, generator: Generators, batch: int, device: torch.device):
        if isinstance(generator, list) and len(generator) == 1:
            generator = generator[0]
        if isinstance(generator, list) and len(generator) != batch:
            raise ValueError(
                f"got {len(generator)} generators for a batch of {batch} images; pass one generator, "
                f"or exactly {batch} (one per prompt x num_images_per_prompt)"
            )
        if generator is not None and not isinstance(generator, (torch.Generator, list)):
            raise TypeError(f"generator must be a torch.Generator or a list of them, got {type(generator).__name__}")
        self.generator = generator
        self.batch = batch
        self.device = device

    @property
    def per_item(self) -> bool:
        return isinstance(self.generator, list)

    def randn_into(self, out: torch.Tensor, items: list[int] | None = None) -> torch.Tensor:
        """Fill `out` (n, ...) with N(0, 1). With a generator list, row r draws from generator items[r]."""
        if isinstance(self.generator, list):
            rows = items if items is not None else list(range(out.shape[0]))
            for r, item in enumerate(rows):
                self._draw(out[r: r + 1], self.generator[item])
        else:
            self._draw(out, self.generator)
        return out

    def _draw(self, out: torch.Tensor, generator: torch.Generator | None) -> None:
        gen_device = generator.device if generator is not None else out.device
        if gen_device.type == out.device.type:
            torch.randn(out.shape, generator=generator, dtype=out.dtype, device=out.device, out=out)
        elif gen_device.type == "cpu":  # CPU generator, GPU tensor: draw on the CPU and copy, as diffusers does
            out.copy_(torch.randn(out.shape, generator=generator, dtype=out.dtype))
        else:
            raise ValueError(f"cannot draw a {out.device.type} tensor from a {gen_device.type} generator")
