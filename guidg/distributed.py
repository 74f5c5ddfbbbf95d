"""Data-parallel fine-tuning over several processes (``torchrun``): who this process is, and the global batch.

Under ``torchrun --nproc_per_node N`` every process runs the same sweep. The fine-tuning loop splits each
step's per-domain batch between the processes (rank r takes the slots r, r + N, r + 2N ... of every domain),
encodes its share with the image encoder wrapped in ``DistributedDataParallel``, then gathers every share's
features back into the single-process order, so the loss (CMAttn's batch routing, UEO's batch entropy
included) is the loss of the whole batch on every rank. The result then depends on N only through
floating-point order. Only rank 0 writes files (records, experts, checkpoints).
"""

from __future__ import annotations

import datetime
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.nn.functional import all_gather
from torch import Tensor

from imagenet_dg.errors import ImageNetDGError

PROCESS_GROUP_TIMEOUT = datetime.timedelta(hours=6)
"""How long a rank waits for the others at a collective: rank 0 alone scores and writes each run, which can
take long on a large test split, while the others wait for the next run."""


class DistributedError(ImageNetDGError):
    """The processes of a data-parallel run do not fit together (batch not divisible, no process group)."""


@dataclass(frozen=True)
class Replica:
    """This process's place among the data-parallel processes."""

    rank: int
    world_size: int

    @property
    def is_main(self) -> bool:
        """Whether this process writes the files (rank 0)."""
        return self.rank == 0

    def slots(self, per_domain: int) -> range:
        """The slots of each domain's per-step batch this rank loads and encodes."""
        return range(self.rank, per_domain, self.world_size)

    def order(self, domains: int, per_domain: int) -> Tensor:
        """Index that puts the ranks' gathered shares (rank 0's first) back in single-process batch order.

        Single-process order is domain-major: domain 0's slots 0..b-1, then domain 1's, ... . Rank r holds, in
        that order, the slots r, r + N, ... of every domain.
        """
        positions = [d * per_domain + s for r in range(self.world_size)
                     for d in range(domains) for s in range(r, per_domain, self.world_size)]
        return torch.argsort(torch.tensor(positions))


SINGLE = Replica(0, 1)
"""The only process of a run that is not data-parallel."""


def current_replica() -> Replica:
    """This process's replica: from the initialised process group, or :data:`SINGLE` without one."""
    if dist.is_available() and dist.is_initialized():
        return Replica(dist.get_rank(), dist.get_world_size())
    return SINGLE


def launched_world_size() -> int:
    """The number of processes ``torchrun`` started (its ``WORLD_SIZE``), 1 when not started by it."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise DistributedError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number of processes") from None


def launched_as_main() -> bool:
    """Whether this process is rank 0 of a ``torchrun`` launch (or not launched by torchrun at all)."""
    return os.environ.get("RANK", "0") == "0"


def init_from_environment(device_type: str) -> Replica:
    """Join the process group ``torchrun`` set up (NCCL on CUDA, gloo on CPU); :data:`SINGLE` without torchrun.

    Each CUDA rank uses the GPU of its ``LOCAL_RANK``. Calling it again returns the current replica.
    """
    if launched_world_size() == 1:
        return SINGLE
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend, timeout=PROCESS_GROUP_TIMEOUT)
    return current_replica()


def check_divisible(per_domain: int, replica: Replica) -> None:
    """Every rank must take the same share of each domain's batch, so the global batch is split evenly."""
    if per_domain % replica.world_size:
        raise DistributedError(
            f"the per-domain batch ({per_domain}) does not split evenly over {replica.world_size} processes; "
            f"use a number of processes that divides it, or --set finetune.batch_per_domain=<multiple of "
            f"{replica.world_size}>"
        )


def gather_in_order(local: Tensor, replica: Replica, domains: int, per_domain: int) -> Tensor:
    """Every rank's ``local`` rows (its share of the batch) joined in single-process batch order.

    Gradients flow back to each rank's own rows (``torch.distributed.nn.all_gather``): the backward pass sums
    every rank's gradient of its (identical) loss, which ``DistributedDataParallel``'s average over ranks
    then turns back into the single-process gradient.
    """
    if replica.world_size == 1:
        return local
    with warnings.catch_warnings():
        # Deprecated in favour of a private module; the public function still gathers with gradients.
        warnings.simplefilter("ignore", FutureWarning)
        shares: Sequence[Tensor] = all_gather(local.contiguous())
    return torch.cat(list(shares))[replica.order(domains, per_domain).to(local.device)]


def broadcast_from_main(tensor: Tensor, replica: Replica) -> Tensor:
    """Rank 0's ``tensor`` on every rank (e.g. the experts' heads, trained on each rank, may differ on a GPU)."""
    if replica.world_size == 1:
        return tensor
    tensor = tensor.contiguous().clone()
    dist.broadcast(tensor, src=0)
    return tensor


def broadcast_object(value: object, replica: Replica) -> object:
    """Rank 0's ``value`` (a small picklable decision, e.g. whether a run is already done) on every rank."""
    if replica.world_size == 1:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def barrier(replica: Replica) -> None:
    """Wait for every rank (no-op for a single process)."""
    if replica.world_size > 1:
        dist.barrier()


def rank_device(device: str) -> str:
    """Under torchrun, each CUDA rank uses the GPU of its LOCAL_RANK."""
    if torch.device(device).type == "cuda" and "LOCAL_RANK" in os.environ:
        return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return device


class LateAgreement:
    """Whether any rank wants to stop, the same answer on every rank (see :mod:`guidg.interruption`).

    Each call starts combining this step's wishes and returns the previous step's result, so the host never
    waits for the device to learn it; a stop therefore comes one step after the first signal, on every rank
    at the same step.
    """

    def __init__(self, replica: Replica, device: torch.device) -> None:
        self.replica = replica
        self.device = device
        self._pending: tuple[Any, Tensor] | None = None

    def __call__(self, here: bool) -> bool:
        flag = torch.tensor([int(here)], dtype=torch.int32, device=self.device)
        work = dist.all_reduce(flag, op=dist.ReduceOp.MAX, async_op=True)
        previous, self._pending = self._pending, (work, flag)
        if previous is None:
            return False
        previous[0].wait()
        return bool(previous[1].item())

    def finish(self) -> None:
        """Wait for the last combination, so that no collective is left unfinished."""
        if self._pending is not None:
            self._pending[0].wait()
            self._pending = None
