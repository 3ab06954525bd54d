"""ModelGate: how a call that needs gradients reaches its torch modules through the dispatcher (latent-space
guidance's UNet and VAE decoder, Pix2Pix-Zero's guided UNet step).

Gradients need torch modules called directly instead of dispatcher jobs; a gate gives those calls what every job
gets: the caller's cancel check before each one (G's forward calls, and
their recomputation in backward under checkpointing), and the dispatcher's one-at-a-time rule, by holding
`ModelDispatcher.exclusive()` around each forward call and around the whole backward pass (`hold`), so they are
never merged with, nor run beside, another thread's model call.

Locking rule: a gate serves one guide call; `_holder` (the thread inside its `hold`) is written only by that
thread while it holds the dispatcher, and read by any thread that runs one of its modules, which runs them under
that hold when it is the holder or runs inside a backward pass (autograd's device thread, in a CUDA backward the
holder started and waits in), and otherwise takes the dispatcher's turn itself."""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

import torch

from cyclediff.runtime.core import cancel
from cyclediff.runtime.core.dispatcher import ModelDispatcher


class ModelGate:
    """One guide call's way to its differentiable models; `wrap` each module, `hold` around the backward."""

    def __init__(self, dispatcher: ModelDispatcher):
        self.dispatcher = dispatcher
        self._holder: int | None = None
        self._check: Callable[[], None] | None = None  # the holder's cancel check, for autograd's threads

    def wrap(self, module: torch.nn.Module) -> GatedModule:
        return GatedModule(self, module)

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """The dispatcher's turn for this call during the block (nested holds of the call run inside it)."""
        if self._inside():
            yield
            return
        with self.dispatcher.exclusive():
            self._holder, self._check = threading.get_ident(), cancel.current_check()
            try:
                yield
            finally:
                self._holder, self._check = None, None

    def check(self) -> None:
        """The calling thread's cancel check; on a thread autograd runs for the holder, the holder's."""
        if self._inside() and self._holder != threading.get_ident():
            if self._check is not None:
                self._check()
            return
        cancel.check_cancelled()

    def _inside(self) -> bool:
        holder = self._holder
        return holder is not None and (holder == threading.get_ident() or torch._C._current_graph_task_id() != -1)


class GatedModule(torch.nn.Module):
    """A module whose every call (a forward, or its recomputation in backward) runs the cancel check, then runs
    under the gate's hold. Same arguments and result as the module: G's arithmetic is unchanged to the bit."""

    def __init__(self, gate: ModelGate, inner: torch.nn.Module):
        super().__init__()
        self.gate, self.inner = gate, inner

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        self.gate.check()  # before the call: a stop here leaves nothing half done
        with self.gate.hold():
            return self.inner(*args)
