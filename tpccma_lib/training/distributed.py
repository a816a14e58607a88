"""Small ``torch.distributed`` helpers: who am I, how many are we, and a gather with autograd.

Every helper works without a process group (a plain single-process run): ``is_dist()`` is
``False``, ``rank() == 0``, ``world_size() == 1`` and :func:`gather_with_grad` returns its
input unchanged, so callers need no special case.

Gradient convention of :func:`gather_with_grad` (the one the losses rely on): the backward pass
*sums* the gradient that every rank's loss sends to a rank's rows. When every rank computes the
same global loss ``L`` on the gathered batch, rank ``r`` therefore receives
``world_size * dL/dx_r`` for its own rows, and averaging parameter gradients over ranks (what
``DistributedDataParallel`` and the trainer's all-reduce-mean do) gives exactly the
single-process gradient of ``L`` on the concatenated batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["is_dist", "rank", "world_size", "rank_and_world", "gather_with_grad"]

# Backends with a native reduce-scatter; the others (gloo, mpi) use all-reduce + slice.
_REDUCE_SCATTER_BACKENDS = ("nccl", "xccl")


def is_dist() -> bool:
    """True when ``torch.distributed`` is available and a default process group is set up."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank in the default group (0 without a process group)."""
    return dist.get_rank() if is_dist() else 0


def world_size() -> int:
    """Number of processes in the default group (1 without a process group)."""
    return dist.get_world_size() if is_dist() else 1


def rank_and_world() -> tuple[int, int]:
    """``(rank(), world_size())`` in one call."""
    return rank(), world_size()


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward sums every rank's gradient back to the owner."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        tensor = tensor.contiguous()
        ctx.rank = dist.get_rank()
        ctx.world = dist.get_world_size()
        ctx.rows = tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(ctx.world)]
        dist.all_gather(parts, tensor)
        return torch.cat(parts, dim=0)  # (world * rows, ...)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad_output = grad_output.contiguous()
        if dist.get_backend() in _REDUCE_SCATTER_BACKENDS:
            own = torch.empty(
                (ctx.rows, *grad_output.shape[1:]),
                dtype=grad_output.dtype,
                device=grad_output.device,
            )
            dist.reduce_scatter_tensor(own, grad_output, op=dist.ReduceOp.SUM)
            return own
        summed = grad_output.clone()
        dist.all_reduce(summed, op=dist.ReduceOp.SUM)
        return summed[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's ``tensor`` along dim 0, keeping autograd to each rank's rows.

    Args:
        tensor: (B_local, ...) this rank's share; every rank must pass the same shape and dtype
            (the trainer splits the global batch evenly).
    Returns:
        (world_size * B_local, ...) the global batch, rank 0's rows first. Without a process
        group (or with one process) the input itself.
    """
    if not is_dist() or dist.get_world_size() == 1:
        return tensor
    return _GatherWithGrad.apply(tensor)
