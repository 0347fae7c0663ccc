"""Forward hooks that capture module outputs, removed on exit (even on exception), and :func:`list_layers`, which
hooks every module for one pass to list the names and output shapes a probe can select.

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

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from .model import call_model, eval_no_grad, first_tensor, unwrap_model


class _StopForward(Exception):
    """Raised from a hook to abort the forward pass once all requested layers are captured."""


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


def list_layers(
    model: nn.Module, example_inputs: Any, *, include_hidden_states: bool = True
) -> list[tuple[str, tuple[int, ...] | None]]:
    """One dummy forward pass; return ``(name, output shape)`` for every module that produced a
    tensor, in ``named_modules()`` order (shape of the first tensor of tuple / ``ModelOutput``
    outputs). Modules not called in the pass are omitted. With ``include_hidden_states`` and a
    model that returns ``hidden_states`` (dict inputs), ``("hidden_states.<i>", shape)`` entries are
    appended. ``example_inputs``: a dict of tensors (keyword arguments), a tensor, or a tuple of
    positional arguments. The model's train/eval state is restored afterwards.
    """
    inner = unwrap_model(model)
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []

    def make_hook(name: str):
        def hook(_module: nn.Module, _args: Any, output: Any) -> None:
            if name not in shapes:
                t = first_tensor(output, name, strict=False)
                if t is not None:
                    shapes[name] = tuple(t.shape)

        return hook

    for name, module in inner.named_modules():
        if name:
            handles.append(module.register_forward_hook(make_hook(name)))
    want_hs = include_hidden_states and isinstance(example_inputs, dict) and hasattr(inner, "config")
    try:
        with eval_no_grad(inner):
            out = call_model(inner, example_inputs, output_hidden_states=want_hs)
    finally:
        for h in handles:
            h.remove()
    result: list[tuple[str, tuple[int, ...] | None]] = [(n, shapes[n]) for n, _ in inner.named_modules() if n in shapes]
    hs = getattr(out, "hidden_states", None) if want_hs else None
    if isinstance(hs, (tuple, list)):
        for i, t in enumerate(hs):
            if isinstance(t, torch.Tensor):
                result.append((f"hidden_states.{i}", tuple(t.shape)))
    return result
