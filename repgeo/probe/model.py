"""The bottom of :mod:`repgeo.probe`: what every other probe module needs to handle a model.

Unwrapping (``DistributedDataParallel`` / ``DataParallel`` ``.module`` and ``torch.compile`` ``._orig_mod``),
calling a model on a batch (a dict of tensors as keyword arguments, a tensor, or a tuple/list of positional
arguments), eval mode under ``no_grad`` with each submodule's own flag restored, the model's device, and the
first tensor of a module output. Imports nothing else of repgeo.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


def unwrap_model(model: nn.Module) -> nn.Module:
    """Strip ``DistributedDataParallel``/``DataParallel`` (``.module``) and ``torch.compile``
    (``._orig_mod``) wrappers, in any nesting, and return the inner module."""
    from torch.nn.parallel import DataParallel, DistributedDataParallel

    while True:
        if isinstance(model, (DataParallel, DistributedDataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode; restore each submodule's own train/eval flag on exit."""
    flags = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags.items():
            m.training = flag


@contextmanager
def eval_no_grad(model: nn.Module) -> Iterator[nn.Module]:
    """:func:`eval_mode` under ``torch.no_grad()``."""
    with eval_mode(model), torch.no_grad():
        yield model


def model_device(model: nn.Module) -> torch.device:
    """The device of the first parameter (else buffer) of ``model``; CPU for a module without either."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def move_to(x: Any, device: torch.device) -> Any:
    """``x`` with every tensor (also inside dicts, tuples and lists) moved to ``device``."""
    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, Mapping):
        return {k: move_to(v, device) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return type(x)(move_to(v, device) for v in x)
    return x


def call_model(model: nn.Module, inputs: Any, *, output_hidden_states: bool = False) -> Any:
    """Call ``model`` on a dict (kwargs), a tensor, or a tuple/list (positional args)."""
    if isinstance(inputs, Mapping):
        kwargs = dict(inputs)
        if output_hidden_states:
            kwargs["output_hidden_states"] = True
        return model(**kwargs)
    if output_hidden_states:
        raise TypeError("hidden_states layers need dict batches (keyword inputs of a transformers model)")
    if isinstance(inputs, torch.Tensor):
        return model(inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    raise TypeError(f"a batch must be a dict of tensors, a tensor or a tuple of tensors, not {type(inputs)}")


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
