"""Training on the source domains' training images pooled into one set, in seeded epochs, resumably.

The few-shot methods whose reference code trains on one dataset (CLIP-LoRA, MaPLe) see the sources' training
images (``task.expert[d]`` of every source ``d``, in source order) as one set and go through it in epochs, as a
shuffling ``DataLoader`` does. :class:`PooledEpochSampler` makes each epoch's order a seeded permutation of the
pooled set and each image's augmentation seed a pure function of (seed, step, slot), so a step's batch does
not depend on anything drawn before it: a run resumed from a checkpoint continues exactly where an
uninterrupted run would be, whatever the number of loading workers. Its batches are lists of
:class:`guidg.finetune.StepItem`, so they load through the same pipeline as image-encoder fine-tuning
(:func:`guidg.finetune.step_batches`: the decoded-image cache when the run has one, else the files).

:func:`train_steps` is the loop: one optimiser step per batch, the learning-rate schedule stepped per step or
per epoch, the loss of each epoch recorded, the trainable tensors and optimiser saved every
``checkpoint_every`` steps into ``run_dir`` and taken up again by a rerun. Only source data is read here; model
selection, where a method has any, uses the sources' validation images (:func:`guidg.model_selection.validation_images`).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Sampler
from tqdm.auto import tqdm

from guidg.checkpoints import load_training_state, save_training_state
from guidg.distributed import current_replica
from guidg.divergence import check_finite
from guidg.finetune import StepItem, step_batches
from guidg.seeding import derive_seed, generator
from imagenet_dg.errors import ImageNetDGError
from imagenet_dg.loading import LabeledImages, TaskData

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "pooled-training-state.pt"
"""Name of the training checkpoint inside a run folder."""

SCHEDULE_UNITS = ("step", "epoch")
"""When the learning-rate scheduler steps: after every optimiser step, or after every epoch."""


class PooledTrainingError(ImageNetDGError):
    """Training on the pooled sources cannot run as asked."""


def source_pools(task: TaskData) -> list[LabeledImages]:
    """The sources' training images, one entry per source in ``task.sources`` order (``task.expert``)."""
    return [task.expert[source] for source in task.sources]


@contextlib.contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Within the block no parameter of ``model`` trains (only what a method adds beside it); afterwards each
    parameter takes back the ``requires_grad`` it had, by name. Whatever the block added to the model must be
    gone (or merged) by then."""
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    model.requires_grad_(False)
    try:
        yield
    finally:
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(flags[name])


def task_shots(task: TaskData) -> int | None:
    """The task's number of shots: under the ``fewshot`` protocol the most training images of one class in
    one source (k of the k-shot draw); None under ``full``, which has no shots."""
    if task.protocol != "fewshot":
        return None
    return max(max(Counter(pool.labels).values(), default=0) for pool in source_pools(task))


def epoch_steps(pool_sizes: Sequence[int], batch_size: int, drop_last: bool) -> int:
    """Batches of ``batch_size`` in one pass over the pooled images (the incomplete last one counted unless
    ``drop_last``)."""
    full, rest = divmod(sum(pool_sizes), batch_size)
    return full if drop_last or rest == 0 else full + 1


class PooledEpochSampler(Sampler[list[StepItem]]):
    """For each step from ``start`` to ``total``, the images of that step: ``batch_size`` of the pooled sources.

    Epoch e is the permutation ``randperm(N)`` drawn from ``generator(seed, purpose, "epoch", e)`` of the N
    pooled images (pools in order, each in its own order), cut into consecutive batches; with ``drop_last``
    the last incomplete batch of an epoch is left out (Dassl's training loader), otherwise it is a smaller
    batch (a plain ``DataLoader``). Image ``slot`` of step s is augmented with seed
    ``derive_seed(seed, purpose, "augment", s, slot)``.
    """

    def __init__(
        self, pool_sizes: Sequence[int], batch_size: int, seed: int, total: int, *, purpose: str,
        drop_last: bool, start: int = 0,
    ) -> None:
        self.pool_sizes = [int(n) for n in pool_sizes]
        self.size = sum(self.pool_sizes)
        if self.size == 0:
            raise PooledTrainingError("the sources hold no training image")
        if batch_size < 1:
            raise PooledTrainingError(f"the batch size must be at least 1, got {batch_size}")
        if drop_last and self.size < batch_size:
            raise PooledTrainingError(
                f"the sources hold {self.size} training images, fewer than one batch of {batch_size}; "
                "use a smaller batch size"
            )
        self.batch_size = batch_size
        self.seed = seed
        self.total = total
        self.start = start
        self.purpose = purpose
        self.drop_last = drop_last
        self._offsets = torch.tensor([0] + self.pool_sizes).cumsum(0)[:-1]
        self._epoch: tuple[int, Tensor] | None = None

    @property
    def steps_per_epoch(self) -> int:
        """Batches in one pass over the pooled images."""
        return epoch_steps(self.pool_sizes, self.batch_size, self.drop_last)

    def epoch_of(self, step: int) -> int:
        """The (0-based) epoch step ``step`` belongs to."""
        return step // self.steps_per_epoch

    def _order(self, epoch: int) -> Tensor:
        if self._epoch is None or self._epoch[0] != epoch:
            rng = generator(self.seed, self.purpose, "epoch", epoch)
            self._epoch = (epoch, torch.randperm(self.size, generator=rng))
        return self._epoch[1]

    def items(self, step: int) -> list[StepItem]:
        """The images of ``step`` (independent of every other step)."""
        epoch, position = divmod(step, self.steps_per_epoch)
        chosen = self._order(epoch)[position * self.batch_size : (position + 1) * self.batch_size]
        domains = torch.searchsorted(self._offsets, chosen, right=True) - 1
        return [
            StepItem(step, int(d), int(i - self._offsets[d]),
                     derive_seed(self.seed, self.purpose, "augment", step, slot))
            for slot, (i, d) in enumerate(zip(chosen.tolist(), domains.tolist()))
        ]

    def __iter__(self) -> Iterator[list[StepItem]]:
        for step in range(self.start, self.total):
            yield self.items(step)

    def __len__(self) -> int:
        return self.total - self.start


@dataclass
class TrainingProgress:
    """What :func:`train_steps` did."""

    steps: int
    """Steps done when it returned (``total`` unless stopped early)."""
    resumed_from: int
    """The step it started at (0, or the step of the checkpoint it resumed)."""
    history: list[dict[str, float]] = field(default_factory=list)
    """One entry per finished epoch (and one at the last step): step, epoch, mean loss, learning rate."""


def training_details(result: Any, **extra: Any) -> dict[str, Any]:
    """What a pooled-source training's result (CLIP-LoRA's, MaPLe's) gives its run's record: the steps done and
    planned, the step it resumed from, the training history and the seconds of its phases, and ``extra``."""
    return {
        "steps": result.steps, "total_steps": result.total_steps, "resumed_from": result.resumed_from, **extra,
        "history": list(result.history),
        "phase_seconds": {name: round(seconds, 3) for name, seconds in result.seconds.items()},
    }


def train_steps(
    *,
    method: str,
    pools: Sequence[LabeledImages],
    transform: Callable,
    sampler: PooledEpochSampler,
    parameters: Mapping[str, nn.Parameter],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    schedule_unit: str,
    step_loss: Callable[[int, Tensor, Tensor], Tensor],
    device: torch.device,
    run_fingerprint: str,
    run_dir: str | os.PathLike[str] | None = None,
    checkpoint_every: int = 500,
    stop_at_step: int | None = None,
    num_workers: int = 0,
) -> TrainingProgress:
    """Run ``sampler``'s steps: load each batch, minimise ``step_loss(step, images, labels)`` (a scalar; the
    function makes the forward pass) with ``optimizer``, step ``scheduler`` per ``schedule_unit``.

    ``parameters`` are the trainable tensors by name: what a checkpoint saves and a resume restores (with the
    optimiser, the scheduler and the history). With ``run_dir`` the state is saved every ``checkpoint_every``
    steps, at ``stop_at_step`` (where the loop then stops: what an interruption leaves behind) and never after
    a non-finite loss; a rerun with the same ``run_fingerprint`` resumes from it (the sampler is set to start
    there), a checkpoint of another run is refused.
    """
    if schedule_unit not in SCHEDULE_UNITS:
        raise PooledTrainingError(f"schedule_unit must be one of {', '.join(SCHEDULE_UNITS)}, got {schedule_unit!r}")
    if current_replica().world_size > 1:
        raise PooledTrainingError(
            f"{method} trains in one process; it was started under torchrun with several: run it without torchrun"
        )
    checkpoint = Path(run_dir) / CHECKPOINT_FILE if run_dir is not None else None
    total = sampler.total
    start, history = 0, []
    epoch_loss = [0.0, 0]  # the current epoch's loss sum and number of steps when the run resumed
    if checkpoint is not None:
        state = load_training_state(checkpoint, run_fingerprint)
        if state is not None:
            with torch.no_grad():
                for name, parameter in parameters.items():
                    parameter.copy_(state["parameters"][name].to(parameter.device, parameter.dtype))
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            start, history, epoch_loss = int(state["step"]), list(state["history"]), list(state["epoch_loss"])
            logger.info("%s: resuming at step %d of %d", method, start, total)
    sampler.start = start

    def save(step: int) -> None:
        if checkpoint is None:
            return
        save_training_state(checkpoint, {
            "fingerprint": run_fingerprint,
            "step": step,
            "parameters": {name: p.detach().to("cpu", copy=True) for name, p in parameters.items()},
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "history": history,
            "epoch_loss": [float(running), counted],
        })

    batches = step_batches(pools, transform, sampler, num_workers=num_workers,
                           pin_memory=device.type == "cuda", device=device)
    step = start
    pending: tuple[int, Tensor] | None = None
    # The epoch's losses are summed on the device and read once an epoch, so no step waits for the host.
    # In float64, and carried over by a resume, so a resumed run records the very losses of an uninterrupted one.
    running = torch.tensor(float(epoch_loss[0]), dtype=torch.float64, device=device)
    counted = int(epoch_loss[1])
    progress = tqdm(total=total, initial=start, desc=method, unit="step", disable=None, leave=False)
    for images, labels, _domains in batches:
        loss = step_loss(step, images.to(device, non_blocking=True), labels.to(device, non_blocking=True))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        # The previous step's loss is checked, not this one's, so the device never waits for the host.
        if pending is not None:
            check_finite(pending[1], pending[0], method)
        pending = (step, loss.detach())
        running, counted = running + loss.detach().double(), counted + 1
        lr = optimizer.param_groups[0]["lr"]
        step += 1
        progress.update()
        epoch_end = step % sampler.steps_per_epoch == 0
        if schedule_unit == "step" or epoch_end:
            scheduler.step()
        if epoch_end or step == total:
            mean = float(running) / counted
            history.append({"step": step, "epoch": sampler.epoch_of(step - 1) + 1, "loss": mean, "lr": lr})
            logger.info("%s: step %d/%d loss %.4f", method, step, total, mean)
            running, counted = torch.zeros((), dtype=torch.float64, device=device), 0
        if step % checkpoint_every == 0 or step == stop_at_step:
            check_finite(pending[1], pending[0], method)  # never save a diverged state
            save(step)
        if step == stop_at_step:
            break
    progress.close()
    if pending is not None:
        check_finite(pending[1], pending[0], method)
    return TrainingProgress(step, start, history)


def describe_fingerprint_inputs(
    method: str, seed: int, config: Any, backbone_record: Mapping[str, Any], pools: Sequence[LabeledImages],
    class_names: Sequence[str],
) -> dict[str, Any]:
    """What identifies a pooled-source training run, for :func:`guidg.checkpoints.fingerprint`."""
    return {
        "method": method,
        "seed": seed,
        "config": config,
        "backbone": dict(backbone_record),
        "pools": [[str(p) for p in pool.paths] for pool in pools],
        "labels": [list(pool.labels) for pool in pools],
        "classes": list(class_names),
    }
