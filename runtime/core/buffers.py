"""Preallocated tensors: each (name, shape, dtype) is allocated once per Engine and reused by every call."""
from __future__ import annotations

import torch


class BufferPool:
    def __init__(self, device: torch.device, dtype: torch.dtype = torch.float32):
        self.device = device
        self.dtype = dtype  # the default; float64 pools let tests check the algebra to ~1e-15
        self._buffers: dict[tuple[str, tuple[int, ...], torch.dtype], torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype | None = None) -> torch.Tensor:
        key = (name, tuple(int(s) for s in shape), dtype or self.dtype)
        buf = self._buffers.get(key)
        if buf is None:
            buf = self._buffers[key] = torch.empty(key[1], dtype=key[2], device=self.device)
        return buf

    @property
    def allocations(self) -> int:
        return len(self._buffers)

    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in list(self._buffers.values()))

    def report(self) -> dict[str, int]:
        """Bytes per buffer name, summed over shapes."""
        out: dict[str, int] = {}
        for (name, _, _), b in list(self._buffers.items()):  # a snapshot: another thread may be adding
            out[name] = out.get(name, 0) + b.numel() * b.element_size()
        return out
