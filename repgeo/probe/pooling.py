"""Pooling of layer outputs into feature rows (one row per stimulus, or per token).

Input: ``hidden`` of shape (batch, seq, dim) and an optional ``attention_mask`` (batch, seq) with
1 = real token, 0 = padding (``None`` means no padding). An optional boolean ``token_mask``
(batch, seq), e.g. response-only tokens of a causal LM, is AND-ed with the attention mask: the
*effective mask* below is ``attention_mask & token_mask``.

* ``"cls"``: the first token of the effective mask (with right padding and no token mask: position 0;
  with left padding the first non-pad position, so left and right padding agree);
* ``"mean"``: mean over the effective mask;
* ``"last"``: the last token of the effective mask (padding-side aware, like ``"cls"``);
* ``"tokens"``: every effective-mask token becomes a row, ordered by (batch row, position):
  output (n_tokens, dim);
* ``"none"``: no pooling, for non-sequence outputs: (batch, dim) is returned as is, and higher
  ranks (a CNN's (batch, C, H, W)) are flattened to (batch, C·H·W). Masks are ignored.

Outputs are float32 (float64 inputs stay float64); the reduction is done in that precision, so
half-precision activations are upcast before summing. The result never aliases ``hidden``. A row
with an empty effective mask raises ``ValueError`` for ``cls``/``mean``/``last``.
"""

from __future__ import annotations

from typing import Literal

import torch

from repgeo._validation import POOLINGS, check_choice

Pooling = Literal["cls", "mean", "last", "tokens", "none"]


def _float(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype == torch.float64 else x.float()


def effective_mask(
    hidden: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    token_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Boolean (batch, seq) mask: ``attention_mask != 0`` AND ``token_mask`` (each optional)."""
    b, s = hidden.shape[:2]
    mask = torch.ones(b, s, dtype=torch.bool, device=hidden.device)
    for m, label in ((attention_mask, "attention_mask"), (token_mask, "token_mask")):
        if m is None:
            continue
        if tuple(m.shape) != (b, s):
            raise ValueError(
                f"{label} has shape {tuple(m.shape)} but the layer output is {tuple(hidden.shape)}; expected ({b}, {s})"
            )
        mask = mask & (m.to(hidden.device) != 0)
    return mask


def pool(
    hidden: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    method: str = "mean",
    token_mask: torch.Tensor | None = None,
    *,
    check_empty: bool = True,
) -> torch.Tensor:
    """Pool a layer output; see the module docstring for the conventions.

    ``check_empty=False`` skips the check for batch rows without tokens (it reads a value back from the device,
    a host synchronisation); a training loss that validated its first batch passes it.
    """
    check_choice("pooling", method, POOLINGS)
    if method == "none":
        if hidden.ndim < 2:
            raise ValueError(f"pooling 'none' needs at least (batch, dim), got shape {tuple(hidden.shape)}")
        # always a copy: a view could be changed by a later in-place op (ReLU(inplace=True))
        flat = hidden.reshape(hidden.shape[0], -1)
        return flat.to(torch.float64 if flat.dtype == torch.float64 else torch.float32, copy=True)
    if hidden.ndim != 3:
        raise ValueError(
            f"pooling {method!r} needs a (batch, seq, dim) output, got shape {tuple(hidden.shape)}; "
            "use pooling='none' for non-sequence layers"
        )
    mask = effective_mask(hidden, attention_mask, token_mask)
    if method == "tokens":
        return _float(hidden[mask])
    counts = mask.sum(dim=1)
    if check_empty and bool((counts == 0).any()):
        rows = torch.nonzero(counts == 0).flatten().tolist()
        raise ValueError(f"pooling {method!r}: batch rows {rows} have no (unmasked) tokens")
    if method == "mean":
        h = _float(hidden)
        return (h * mask.unsqueeze(-1).to(h.dtype)).sum(dim=1) / counts.unsqueeze(-1).to(h.dtype)
    pos = torch.arange(hidden.shape[1], device=hidden.device).expand_as(mask)
    if method == "cls":
        idx = torch.where(mask, pos, hidden.shape[1]).min(dim=1).values
    else:  # last
        idx = torch.where(mask, pos, -1).max(dim=1).values
    return _float(hidden[torch.arange(hidden.shape[0], device=hidden.device), idx])
