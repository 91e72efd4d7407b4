"""Data-parallel training on several GPUs or machines with DistributedDataParallel (DDP).

The same `engine.fit` runs in every process launched by `torchrun`:

    torchrun --nproc_per_node=4 -m course_lib train --model unet --dataset cells --distributed

Each process holds a full copy of the model and sees its own shard of every batch
(`DistributedSampler`); after `backward` DDP averages the gradients over all processes, so every
copy takes the same optimiser step (Li et al., "PyTorch Distributed", VLDB 2020). BatchNorm
statistics stay per-process unless the model is converted with SyncBatchNorm.

Evaluation shards the validation set without padding (`ShardSampler`) and sums the confusion
matrices of all processes (`ConfusionMatrix.all_reduce`), so the metrics equal those of a single
process. Only rank 0 writes checkpoints and prints.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

__all__ = [
    "DistributedContext",
    "setup_distributed",
    "cleanup_distributed",
    "is_distributed",
    "get_rank",
    "get_world_size",
    "is_main_process",
    "all_reduce_sum",
    "barrier",
    "wrap_model",
    "ShardSampler",
    "distributed_loaders",
]


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits: global rank, number of processes, GPU index on its machine."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """True on rank 0 (and in a plain single-process run): the process that writes files."""
    return get_rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over all processes in place (unchanged outside torch.distributed)."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def setup_distributed(backend: str | None = None) -> DistributedContext:
    """Join the process group described by the torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK).

    backend: "nccl" on CUDA, "gloo" on the CPU (default: chosen from the hardware). Without the
    torchrun variables this is a single-process run and nothing is initialised.
    """
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return DistributedContext(0, 1, 0, device)
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend not in ("nccl", "gloo"):
        raise ValueError(f"backend must be 'nccl', 'gloo' or None, got {backend!r}")
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if not is_distributed():
        dist.init_process_group(backend=backend)
    return DistributedContext(dist.get_rank(), dist.get_world_size(), local_rank, device)


def cleanup_distributed() -> None:
    """Leave the process group together: wait for every rank, then destroy the group.

    Without the barrier a rank that finishes early (rank 1 while rank 0 still writes figures)
    tears its connections down under a peer that is still using them. Drop DDP-wrapped models
    before calling this, so the group is not kept alive until interpreter shutdown.
    """
    if is_distributed():
        gc.collect()  # frees DDP reducers that only cycles still hold
        dist.barrier()
        dist.destroy_process_group()


def wrap_model(model: nn.Module, device: torch.device, sync_batchnorm: bool = False) -> nn.Module:
    """Move `model` to `device` and wrap it in DDP (optionally converting BatchNorm to SyncBatchNorm)."""
    device = torch.device(device)
    if sync_batchnorm and device.type != "cuda":
        raise ValueError(
            f"sync_batchnorm=True needs CUDA devices (PyTorch's SyncBatchNorm runs on "
            f"GPUs only), got device {device}; leave it False on the CPU"
        )
    if not is_distributed():
        return model.to(device)
    if sync_batchnorm:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device)
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


class ShardSampler(Sampler[int]):
    """Indices rank, rank + world, rank + 2 world, ...: every sample exactly once over all ranks.

    Unlike `DistributedSampler`, nothing is repeated to even out the shards, so summed counts
    (confusion matrices) equal those of one process over the whole data set.
    """

    def __init__(self, dataset: Dataset, num_replicas: int | None = None, rank: int | None = None):
        self.length = len(dataset)
        self.num_replicas = get_world_size() if num_replicas is None else num_replicas
        self.rank = get_rank() if rank is None else rank
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank must be in [0, {self.num_replicas}), got {self.rank}")

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.num_replicas))


def distributed_loaders(
    train_set: Dataset,
    val_set: Dataset,
    batch_size: int,
    *,
    seed: int = 0,
    num_workers: int = 0,
    val_batch_size: int | None = None,
) -> tuple[DataLoader, DataLoader]:
    """Train loader with a shuffling `DistributedSampler`, val loader with an unpadded `ShardSampler`.

    `batch_size` is per process; the effective batch is batch_size * world_size. `val_batch_size`
    defaults to `batch_size` (1 for whole images of different sizes).
    `engine.fit` calls `sampler.set_epoch(epoch)` so each epoch is shuffled differently.
    """
    train_sampler = DistributedSampler(
        train_set,
        num_replicas=get_world_size(),
        rank=get_rank(),
        shuffle=True,
        seed=seed,
        drop_last=False,
    )
    train_loader = DataLoader(
        train_set,
        batch_size=batch_size,
        sampler=train_sampler,
        num_workers=num_workers,
        drop_last=False,
    )
    val_loader = DataLoader(
        val_set,
        batch_size=val_batch_size or batch_size,
        sampler=ShardSampler(val_set),
        num_workers=num_workers,
    )
    return train_loader, val_loader
