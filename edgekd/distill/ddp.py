"""Scale-out under `torchrun`: one process per rank, DistributedDataParallel, rank-0-only output.

`torchrun --nproc_per_node N -m edgekd distill ...` sets RANK / WORLD_SIZE / LOCAL_RANK; the trainer
then joins the process group (gloo on CPU, nccl on GPU), shards every epoch with a
DistributedSampler, syncs gradients through DDP, and only rank 0 logs and writes files. Without
those variables everything runs in one process with world size 1 and no process group.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls) -> "DistContext":
        """Join the process group if launched by torchrun (WORLD_SIZE > 1); otherwise single process."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch.distributed as dist

        rank = int(os.environ["RANK"])
        local = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = torch.cuda.is_available() and torch.cuda.device_count() > local
        backend = "nccl" if use_cuda else "gloo"
        device = f"cuda:{local}" if use_cuda else "cpu"
        if use_cuda:
            torch.cuda.set_device(local)
        if not dist.is_initialized():
            dist.init_process_group(backend=backend)
        return cls(rank=rank, world_size=world, local_rank=local, backend=backend, device=device)

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        """Sum a few floats over ranks (epoch loss/accuracy totals)."""
        if not self.distributed:
            return values
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return [float(v) for v in t.cpu()]

    def broadcast(self, values: list[float]) -> list[float]:
        """Rank 0's values on every rank (so best/early-stop decisions never diverge)."""
        if not self.distributed:
            return values
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.broadcast(t, src=0)
        return [float(v) for v in t.cpu()]

    def close(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
