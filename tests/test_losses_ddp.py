"""Two gloo processes on CPU: the DDP-aware losses equal the single-process losses.

Each rank feeds its half of a fixed batch through the same tiny linear heads, computes
``ClipLoss + CMALoss`` (every distribution term) and averages its parameter gradients over the
ranks, as DDP does. The loss on every rank and the averaged gradients must equal the values of
one process on the concatenated batch (float64, atol 1e-6).
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from tpccma_lib.training.distributed import gather_with_grad, rank_and_world
from tpccma_lib.training.losses import ClipLoss, CMALoss

pytestmark = pytest.mark.ddp

WORLD = 2
# (global batch, embedding width): the Bures term takes its QR path when batch > width.
SHAPES = ((16, 4), (8, 12))
SETTINGS = (("mmd", False), ("mmd", True), ("coral", False), ("bures", False))


def _losses_and_grads(rank: int, world: int) -> dict[str, dict[str, torch.Tensor]]:
    """Per case: global loss, gathered features and rank-averaged parameter gradients."""
    results: dict[str, dict[str, torch.Tensor]] = {}
    for batch, width in SHAPES:
        generator = torch.Generator().manual_seed(batch * 100 + width)
        image_inputs = torch.randn(batch, 6, generator=generator, dtype=torch.float64)
        text_inputs = torch.randn(batch, 5, generator=generator, dtype=torch.float64) + 0.3
        image_head = torch.nn.Linear(6, width).double()
        text_head = torch.nn.Linear(5, width).double()
        with torch.no_grad():
            for parameter in (*image_head.parameters(), *text_head.parameters()):
                parameter.copy_(torch.randn(parameter.shape, generator=generator))
        params = [*image_head.parameters(), *text_head.parameters()]
        rows = slice(rank * batch // world, (rank + 1) * batch // world)
        clip_loss = ClipLoss()
        for term, unbiased in SETTINGS:
            cma_loss = CMALoss(0.5, 2.0, term, mmd_unbiased=unbiased)
            image = F.normalize(image_head(image_inputs[rows]), dim=1)
            text = F.normalize(text_head(text_inputs[rows]), dim=1)
            loss = clip_loss(image, text, torch.tensor(7.0)) + cma_loss(image, text).total
            grads = torch.autograd.grad(loss, params)
            flat = torch.cat([g.reshape(-1) for g in grads])
            if world > 1:  # what DDP does: average the parameter gradients over ranks
                dist.all_reduce(flat)
                flat /= world
            results[f"{batch}x{width}-{term}-{unbiased}"] = {
                "loss": loss.detach(),
                "grads": flat,
                "gathered": gather_with_grad(image.detach()),
            }
    return results


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        assert rank_and_world() == (rank, world)
        torch.save(_losses_and_grads(rank, world), Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_ddp_losses_and_gradients_equal_single_process(tmp_path: Path) -> None:
    context = mp.start_processes(
        _worker, args=(WORLD, _free_port(), str(tmp_path)), nprocs=WORLD, join=False
    )
    deadline = time.monotonic() + 120
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("the 2-process gloo run did not finish in 120 s")

    single = _losses_and_grads(rank=0, world=1)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    assert set(ranks[0]) == set(single) and len(single) == len(SHAPES) * len(SETTINGS)
    for case, expected in single.items():
        for got in ranks:
            torch.testing.assert_close(got[case]["loss"], expected["loss"], atol=1e-6, rtol=0)
            torch.testing.assert_close(got[case]["grads"], expected["grads"], atol=1e-6, rtol=0)
            # the gather put rank 0's rows first: the global batch in its original order
            torch.testing.assert_close(got[case]["gathered"], expected["gathered"])
        assert expected["grads"].abs().max() > 1e-3  # a real gradient was compared
