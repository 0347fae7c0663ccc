"""Forward hooks that capture module outputs, removed on exit (even on exception).

Conventions:

* The captured value of a module is the *first tensor* of its output: the output itself when it is
  a tensor; the first tensor value (depth first) of a tuple, list, dict or ``ModelOutput``. A hooked
  module whose output holds no tensor raises ``TypeError`` naming the module.
* A module called several times in one forward pass (a shared activation, say) is captured at its
  *first* call of the pass; later calls are ignored.
* ``transform`` (e.g. pooling with the current batch's mask) is applied inside the hook, so a later
  in-place operation (``ReLU(inplace=True)``) cannot alter what was captured and only the pooled
  features are kept alive. Without a transform the output is ``detach().clone()``-d.
* ``stop_early=True``: once every requested module has been captured, the hook raises a private
  exception that aborts the rest of the forward pass; :func:`run_forward` catches it. Use it only
  when nothing after the deepest requested module is needed (not with ``hidden_states``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from .select import unwrap_model


class _StopForward(Exception):
    """Raised from a hook to abort the forward pass once all requested layers are captured."""


def first_tensor(output: Any, name: str = "?", *, strict: bool = True) -> torch.Tensor | None:
    """First tensor of a module output (tensor, tuple/list, dict or ``ModelOutput``), depth first.

    With ``strict`` a missing tensor raises ``TypeError`` naming the module; otherwise ``None``.
    """
    found = _first(output, depth=0)
    if found is None and strict:
        raise TypeError(
            f"hooked module {name!r} returned no tensor (output type {type(output).__name__}); "
            "hook a submodule that returns a tensor"
        )
    return found


def _first(obj: Any, depth: int) -> torch.Tensor | None:
    if isinstance(obj, torch.Tensor):
        return obj
    if depth > 4:
        return None
    if isinstance(obj, Mapping):  # ModelOutput is an OrderedDict; None fields are absent
        values: Any = obj.values()
    elif isinstance(obj, Sequence) and not isinstance(obj, (str, bytes)):
        values = obj
    else:
        return None
    for v in values:
        t = _first(v, depth + 1)
        if t is not None:
            return t
    return None


class Capture:
    """Holds the values captured during one forward pass (``.values``: name → tensor)."""

    def __init__(self, names: Sequence[str], stop_early: bool) -> None:
        self.names = list(names)
        self.stop_early = stop_early
        self.values: dict[str, Any] = {}
        self.transform: Callable[[str, torch.Tensor], Any] | None = None

    def reset(self, transform: Callable[[str, torch.Tensor], Any] | None = None) -> None:
        """Forget the previous pass; set the transform applied to the next pass's outputs."""
        self.values = {}
        self.transform = transform

    def missing(self) -> list[str]:
        return [n for n in self.names if n not in self.values]

    def _hook(self, name: str) -> Callable[[nn.Module, Any, Any], None]:
        def hook(_module: nn.Module, _args: Any, output: Any) -> None:
            if name in self.values:
                return
            t = first_tensor(output, name)
            assert t is not None
            t = t.detach()
            self.values[name] = self.transform(name, t) if self.transform else t.clone()
            if self.stop_early and len(self.values) == len(self.names):
                raise _StopForward

        return hook


@contextmanager
def capture(model: nn.Module, names: Sequence[str], *, stop_early: bool = False) -> Iterator[Capture]:
    """Register forward hooks on the modules ``names`` (resolved names of the unwrapped model) and
    yield a :class:`Capture`; the hooks are removed when the block exits, however it exits."""
    inner = unwrap_model(model)
    modules = dict(inner.named_modules())
    cap = Capture(names, stop_early)
    handles = []
    try:
        for name in names:
            if name not in modules:
                raise ValueError(f"no module named {name!r} in {type(inner).__name__}")
            handles.append(modules[name].register_forward_hook(cap._hook(name)))
        yield cap
    finally:
        for h in handles:
            h.remove()


def run_forward(fn: Callable[[], Any]) -> tuple[Any, bool]:
    """Call ``fn()``; return ``(output, stopped)`` where ``stopped`` says an early stop fired
    (output is then ``None``)."""
    try:
        return fn(), False
    except _StopForward:
        return None, True
