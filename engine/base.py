"""The one interface every backend implements: run one exported model into preallocated output tensors."""
from __future__ import annotations

import abc
from typing import Mapping

import torch

from cyclediff.export.specs import ModelSpec


class BackendError(RuntimeError):
    """A backend that cannot run here (missing package, device or file); the message says what to install."""


class ModelRunner(abc.ABC):
    """Runs one model. `feeds` and `outputs` are tensors on the runner's device, keyed by the spec's names.

    Outputs are written in place, so the caller owns every buffer and can allocate them once per shape.
    """

    def __init__(self, spec: ModelSpec):
        self.spec = spec

    @abc.abstractmethod
    def __call__(self, feeds: Mapping[str, torch.Tensor], outputs: Mapping[str, torch.Tensor]) -> None:
        ...

    def check(self, feeds: Mapping[str, torch.Tensor]) -> None:
        """Names and dtypes must match the declaration: a wrong feed is a bug in the caller, caught early."""
        for t in self.spec.inputs:
            if t.name not in feeds:
                raise KeyError(f"{self.spec.name}: missing input {t.name!r}")
            if str(feeds[t.name].dtype).removeprefix("torch.") != t.dtype:
                raise TypeError(f"{self.spec.name}.{t.name}: dtype {feeds[t.name].dtype}, expected {t.dtype}")
