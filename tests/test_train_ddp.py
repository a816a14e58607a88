"""Data-parallel training (2 gloo processes on CPU) equals one process on the global batch."""

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.test_train import fresh, small_cfg, synthetic_inputs
from tpccma_lib.training.loop import train

pytestmark = pytest.mark.ddp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out_dir: str, cfg_kwargs: dict) -> None:
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        train(fresh(), synthetic_inputs(), small_cfg(**cfg_kwargs), out_dir, progress=False)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("term", ["mmd"])
def test_two_gloo_ranks_match_single_process(tmp_path, term):
    # In float64 on both sides. In float32 the all-reduce's other summation order leaves ~1e-7
    # noise on gradients that are ~0, and AdamW's m/sqrt(v) turns that noise into steps of size
    # lr (1e-2): which of the ~850 k weights it hits depends on the CPU's BLAS kernels.
    cfg_kwargs = {"distribution_term": term, "steps": 8}
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        single = train(
            fresh(),
            synthetic_inputs(),
            small_cfg(**cfg_kwargs),
            tmp_path / "single",
            progress=False,
        )
    finally:
        torch.set_default_dtype(previous)
    mp.spawn(
        _worker, args=(2, _free_port(), str(tmp_path / "ddp"), cfg_kwargs), nprocs=2, join=True
    )
    ddp_state = torch.load(tmp_path / "ddp" / "final.pt", weights_only=False)["state_dict"]
    for name, value in single.model.trainable_state_dict().items():
        # float64 reduction-order noise: < 1e-12 after 8 steps (a wrong gradient moves weights
        # by ~1e-2)
        assert value.dtype == torch.float64, name
        torch.testing.assert_close(ddp_state[name], value, atol=1e-9, rtol=1e-7, msg=name)
