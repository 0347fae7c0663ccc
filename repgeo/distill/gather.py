"""Gathering feature rows across data-parallel ranks, with gradient.

Geometric losses are functions of the whole batch (a Gram matrix, a nuclear norm), not sums over samples, so
under data parallelism every rank gathers the rows of all ranks and computes the loss of the *global* batch.
``torch.distributed.nn.functional.all_gather`` carries the gradient back: its backward sums the gradients of all
ranks into the owner of each block. Every rank computes the same global loss L, so each local block receives
``world_size * dL/dblock``; DistributedDataParallel then averages parameter gradients over ranks, which gives
exactly ``dL/dθ`` — the gradient of one process holding the global batch.

Blocks may have different row counts (token-level features): they are zero-padded to the largest block,
gathered, and trimmed.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def world_size() -> int:
    """Number of data-parallel processes (1 when torch.distributed is not initialised)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _sizes(n: int, device: torch.device) -> list[int]:
    local = torch.tensor([n], device=device, dtype=torch.long)
    sizes = [torch.zeros_like(local) for _ in range(world_size())]
    dist.all_gather(sizes, local)
    return [int(s) for s in sizes]


def gather_rows(x: torch.Tensor, *, with_grad: bool) -> torch.Tensor:
    """Concatenate the (n_r, d) row blocks of every rank in rank order; identity on a single process."""
    if world_size() == 1:
        return x
    sizes = _sizes(x.shape[0], x.device)
    m = max(sizes)
    if x.shape[0] < m:
        x = torch.cat([x, x.new_zeros((m - x.shape[0], *x.shape[1:]))])
    if with_grad:
        from torch.distributed.nn.functional import all_gather

        blocks = list(all_gather(x.contiguous()))
    else:
        blocks = [torch.empty_like(x) for _ in sizes]
        dist.all_gather(blocks, x.detach().contiguous())
    return torch.cat([b[:s] for b, s in zip(blocks, sizes, strict=True)])


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over ranks (for logging); identity on a single process."""
    if world_size() == 1:
        return values
    out = values.detach().clone()
    dist.all_reduce(out)
    return out / world_size()
