"""Distributed set-up and model wrapping, applied from outside the model (torchtitan's rule).

Under ``torchrun`` (WORLD_SIZE > 1) the process group uses NCCL on CUDA and gloo on CPU. The
model is wrapped with DDP or FSDP2 (``fully_shard`` on each block, then the root), after an
optional ``torch.compile`` (of the whole model under DDP; of each block before sharding under
FSDP2, as torchtitan does).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from prism_lm.devices import resolve_device


@dataclass(frozen=True)
class World:
    rank: int = 0
    local_rank: int = 0
    size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_world(device_name: str) -> World:
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World(device=resolve_device(device_name))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return World(rank=rank, local_rank=local_rank, size=size, device=device)


def close_world(world: World) -> None:
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model: nn.Module, world: World, parallel: str, compile_model: bool) -> nn.Module:
    """The module to train (its forward is the model's; its parameters are the model's).

    One process or DDP: the whole model compiled (so the LM head and the loss fuse too), then DDP.
    FSDP2: each block compiled, then sharded block by block and at the root, as torchtitan does.
    """
    if world.size > 1 and parallel == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for block in model.blocks:
            if compile_model:
                block.compile()
            fully_shard(block)
        fully_shard(model)
        return model
    module = torch.compile(model) if compile_model else model
    if world.size == 1:
        return module
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(module, device_ids=[world.device.index] if world.device.type == "cuda" else None)


def all_reduce_mean(value: torch.Tensor, world: World) -> torch.Tensor:
    if world.size > 1:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= world.size
    return value


def barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier()
