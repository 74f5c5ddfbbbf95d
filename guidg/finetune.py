"""Fine-tuning the image encoder: GuiDG step 2 (expert-guided) and the ERM / UEO / CLIPood baselines
(``docs/methods.md``, "GuiDG" and "Fine-tuning bases").

Each step draws ``batch_per_domain`` images, with replacement, from every source domain's guide-pool sample,
augments them, and minimises the loss of the base method over the heads: the experts' text features weighed
by the CMAttn it is given (GuiDG), or the single zero-shot classifier (the baselines). AdamW on every
image-encoder parameter (and CMAttn's), cosine schedule, then weight averaging: CLIPood's Beta moving average,
or WiSE-FT for ERM and UEO. The weights of the last step are kept (the ``last-step`` rule of
:mod:`guidg.model_selection`).

Every random draw is a pure function of (seed, step, domain, slot), so a run resumed from a checkpoint ends
exactly where an uninterrupted run ends, whatever the number of loading workers. Under ``torchrun`` each
process loads and encodes its share of every step's batch (see :mod:`guidg.distributed`), so the result does
not depend on the number of processes beyond floating-point order.

What the base method changes (margin, entropy term, weight averaging) is its :class:`guidg.bases.Objective`.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from imagenet_dg.disk import require_free_space
from imagenet_dg.errors import ImageNetDGError
from imagenet_dg.images import open_image
from imagenet_dg.loading import LabeledImages
from guidg.averaging import BetaMovingAverage, wise_ft
from guidg.backbone import Backbone
from guidg.bases import BETA_MOVING_AVERAGE, Objective
from guidg.checkpoints import fingerprint, load_module_state, load_training_state, save_training_state
from guidg.cmattn import CMAttn
from guidg.distributed import (
    SINGLE, LateAgreement, Replica, broadcast_from_main, check_divisible, current_replica, gather_in_order,
)
from guidg.divergence import check_finite
from guidg.image_pipeline import cached_step_batches, uses_cache
from guidg.interruption import StepBoundaries
from guidg.losses import GuidedLoss, guided_loss, single_head_loss
from guidg.schedule import cosine_lambda
from guidg.seeding import derive_seed, generator
from guidg.settings import Section, at_least, positive, setting
from guidg.transforms import SeededTransform, finetune_train_transform

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "finetune-state.pt"


@dataclass(frozen=True)
class FinetuneConfig(Section):
    """Fine-tuning of the image encoder: GuiDG step 2 and the ERM / UEO / CLIPood baselines
    (``docs/methods.md``, "GuiDG")."""

    NAME: ClassVar[str] = "finetune"
    PRESETS: ClassVar[dict[str, dict[str, object]]] = {
        "paper-imagenet-dg": {"batch_per_domain": 12},
        "smoke": {"batch_per_domain": 8, "lr": 3e-3, "weight_decay": 0.0, "epochs": 4, "steps_per_epoch": 25,
                  "checkpoint_every": 25},
        "mini": {"batch_per_domain": 16, "lr": 3e-4, "weight_decay": 0.1, "epochs": 3, "steps_per_epoch": 60,
                 "checkpoint_every": 60},
    }

    batch_per_domain: int = setting(16, at_least(1), "images drawn from every source domain at each step")
    lr: float = setting(5e-6, positive(), "AdamW learning rate")
    weight_decay: float = setting(0.1, at_least(0.0), "AdamW weight decay")
    epochs: int = setting(10, at_least(1), "epochs of steps_per_epoch steps")
    steps_per_epoch: int = setting(400, at_least(1), "steps per epoch")
    warmup_steps: int = setting(0, at_least(0), "linear warm-up steps before the cosine schedule")
    randaugment: bool = setting(True, None, "RandAugment (torchvision defaults) after resize and centre crop")
    checkpoint_every: int = setting(400, at_least(1), "steps between resumable training checkpoints")

    @property
    def total_steps(self) -> int:
        """Optimisation steps of the whole run."""
        return self.epochs * self.steps_per_epoch

    def relations(self) -> Iterator[str]:
        if self.warmup_steps > self.total_steps:
            yield (f"warmup_steps {self.warmup_steps} is longer than the whole run (epochs x steps_per_epoch = "
                   f"{self.total_steps}); expected at most {self.total_steps}")


@dataclass(frozen=True)
class StepItem:
    """One image of one training step."""

    step: int
    domain: int
    index: int
    augment_seed: int


class StepSampler(Sampler[list[StepItem]]):
    """Yields, for each step from ``start`` to ``total``, the images of that step: ``per_domain`` from each pool.

    With a ``replica`` of several processes, it yields only that rank's slots of each domain's draw.
    """

    def __init__(
        self, pool_sizes: Sequence[int], per_domain: int, seed: int, total: int, start: int = 0,
        replica: Replica = SINGLE,
    ) -> None:
        if any(n == 0 for n in pool_sizes):
            raise ImageNetDGError("every source domain needs at least one training image; one pool is empty")
        self.pool_sizes = list(pool_sizes)
        self.per_domain = per_domain
        self.seed = seed
        self.total = total
        self.start = start
        self.replica = replica

    def items(self, step: int) -> list[StepItem]:
        """The images of ``step`` (independent of every other step)."""
        items = []
        for domain, size in enumerate(self.pool_sizes):
            indices = torch.randint(size, (self.per_domain,), generator=generator(self.seed, "draw", step, domain))
            for slot, index in enumerate(indices.tolist()):
                items.append(StepItem(step, domain, index, derive_seed(self.seed, "augment", step, domain, slot)))
        return items

    def share(self, step: int) -> list[StepItem]:
        """This rank's images of ``step``: its slots of every domain, domain-major (all of them for one process)."""
        items = self.items(step)
        if self.replica.world_size == 1:
            return items
        slots = self.replica.slots(self.per_domain)
        return [items[d * self.per_domain + s] for d in range(len(self.pool_sizes)) for s in slots]

    def labels(self, step: int, pools: Sequence[LabeledImages]) -> Tensor:
        """The labels of the whole batch of ``step`` (every rank's share), in single-process order."""
        return torch.tensor([pools[i.domain].labels[i.index] for i in self.items(step)])

    def __iter__(self) -> Iterator[list[StepItem]]:
        for step in range(self.start, self.total):
            yield self.share(step)

    def __len__(self) -> int:
        return self.total - self.start


class PoolImages(Dataset):
    """Images of the source pools, loaded and augmented with the seed carried by each :class:`StepItem`."""

    def __init__(self, pools: Sequence[LabeledImages], transform: Callable) -> None:
        self.pools = list(pools)
        self.transform = SeededTransform(transform)

    def __len__(self) -> int:
        return sum(len(p) for p in self.pools)

    def __getitem__(self, item: StepItem) -> tuple[Tensor, int, int]:
        pool = self.pools[item.domain]
        image = open_image(pool.paths[item.index])
        return self.transform(image, item.augment_seed), pool.labels[item.index], item.domain


def step_batches(
    pools: Sequence[LabeledImages], transform: Callable, sampler: StepSampler, *, num_workers: int, pin_memory: bool,
    device: torch.device | None = None,
) -> Iterable[tuple[Tensor, Tensor, Tensor]]:
    """The (images, labels, domains) of this rank's share of each step of ``sampler``, loaded and augmented.

    The only place that turns image files into training batches. With a decoded-image cache active
    (:func:`guidg.image_cache.using_image_cache`) and a ``device``, images come from the pools' caches, augmented
    per image with the same seeded draws on uint8 tensors, and are yielded normalised on ``device``
    (:func:`guidg.image_pipeline.cached_step_batches`); otherwise from the files, on the CPU.
    """
    settings = uses_cache(transform)
    if settings is not None and device is not None:
        return cached_step_batches(pools, transform, settings, sampler, device=device, num_workers=num_workers)
    return DataLoader(
        PoolImages(pools, transform),
        batch_sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
    )


def train_step(
    backbone: Backbone,
    cmattn: CMAttn | None,
    heads: Tensor,
    images: Tensor,
    labels: Tensor,
    objective: Objective,
    config: FinetuneConfig,
    optimizer: torch.optim.Optimizer,
    *,
    encoder: nn.Module | None = None,
    replica: Replica = SINGLE,
    domains: int = 1,
) -> tuple[GuidedLoss, Tensor | None]:
    """One optimisation step of the image encoder (and CMAttn): returns the loss and CMAttn's weights.

    ``encoder`` is the image encoder to call (the ``DistributedDataParallel`` wrapper of the backbone's under
    several processes). There ``images`` is this rank's share of a batch of ``domains`` domains and
    ``labels`` the labels of the whole batch: the loss is computed on every rank's features, gathered.
    """
    encoder = backbone.image_encoder if encoder is None else encoder
    with backbone.autocast():
        features = F.normalize(encoder(images).float(), dim=-1)
    if replica.world_size > 1:
        features = gather_in_order(features, replica, domains, config.batch_per_domain)
    weights = None
    if cmattn is not None:
        weights = cmattn(features, heads)
        loss = guided_loss(features, heads, weights, labels, objective.base, objective.margin,
                           objective.entropy_weight)
    else:
        loss = single_head_loss(features, heads[0], labels, objective.base, objective.margin,
                                objective.entropy_weight)
    optimizer.zero_grad(set_to_none=True)
    loss.total.backward()
    optimizer.step()
    return loss, weights


@dataclass
class FinetuneResult:
    """What step 2 (or a fine-tuning baseline) produced."""

    visual_state: dict[str, Tensor]
    """Final image-encoder weights, after weight averaging, on CPU."""
    cmattn_state: dict[str, Tensor] | None
    history: list[dict[str, float]] = field(default_factory=list)
    steps: int = 0
    resumed_from: int = 0


def _visual_state(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def finetune_image_encoder(
    backbone: Backbone,
    pools: Sequence[LabeledImages],
    heads: Tensor,
    config: FinetuneConfig,
    objective: Objective,
    *,
    seed: int,
    method: str,
    cmattn: CMAttn | None = None,
    run_dir: str | os.PathLike[str] | None = None,
    num_workers: int = 0,
    stop_at_step: int | None = None,
) -> FinetuneResult:
    """Fine-tune ``backbone``'s image encoder on the source ``pools`` (one per source domain).

    ``heads`` is (d, C, D): the experts' text features, weighed by ``cmattn`` (GuiDG; trained here with the
    encoder, and moved to the backbone's device), or, without ``cmattn``, a single classifier (1, C, D).
    ``objective`` is the base's loss and weight averaging (:meth:`guidg.bases.Base.objective`). With
    ``run_dir``, the training state is saved every ``config.checkpoint_every`` steps and a rerun resumes from it.
    ``stop_at_step`` ends the run early after saving (what an interruption leaves behind). The backbone's image
    encoder holds the final weights afterwards.
    """
    if cmattn is None and heads.shape[0] != 1:
        raise ImageNetDGError("an unguided fine-tuning trains against exactly one classifier head")
    replica = current_replica()
    check_divisible(config.batch_per_domain, replica)
    device = backbone.device
    visual = backbone.model.visual
    # Rank 0's heads on every rank: experts trained on several GPUs need not agree to the last bit.
    heads = broadcast_from_main(F.normalize(heads.detach().float(), dim=-1).to(device), replica)
    total = config.total_steps
    pretrained = _visual_state(visual)

    if cmattn is not None:
        cmattn.to(device)
    parameters = list(visual.parameters()) + (list(cmattn.parameters()) if cmattn is not None else [])
    for p in visual.parameters():
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay, fused=device.type == "cuda")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_lambda(total, config.warmup_steps))
    averaged = objective.averaging == BETA_MOVING_AVERAGE
    average = BetaMovingAverage(visual, total, objective.bma_beta) if averaged else None

    run_fingerprint = fingerprint(
        {
            "method": method,
            "objective": objective,
            "cmattn": None if cmattn is None else cmattn.extra_repr(),
            "seed": seed,
            "config": config,
            "backbone": backbone.spec.describe(),
            "pools": [[str(p) for p in pool.paths] for pool in pools],
            "labels": [list(pool.labels) for pool in pools],
            "heads": hashlib.sha256(heads.cpu().numpy().tobytes()).hexdigest(),
        }
    )
    checkpoint = Path(run_dir) / CHECKPOINT_FILE if run_dir is not None else None
    start, history = 0, []
    if checkpoint is not None:
        state = load_training_state(checkpoint, run_fingerprint)
        if state is not None:
            load_module_state(visual, state["visual"])
            if cmattn is not None:
                load_module_state(cmattn, state["cmattn"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if average is not None:
                average.load_state_dict(state["average"])
            start, history = int(state["step"]), list(state["history"])
            logger.info("%s: resuming fine-tuning at step %d of %d", method, start, total)
    if checkpoint is not None and replica.is_main:
        _check_room_for_state(checkpoint, parameters, average is not None)

    def save(step: int) -> None:
        if checkpoint is None or not replica.is_main:
            return
        save_training_state(
            checkpoint,
            {
                "fingerprint": run_fingerprint,
                "step": step,
                "visual": _visual_state(visual),
                "cmattn": cmattn.state_dict() if cmattn is not None else {},
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "average": average.state_dict() if average is not None else {},
                "history": history,
            },
        )

    transform = finetune_train_transform(backbone.image_size, config.randaugment)
    sampler = StepSampler([len(p) for p in pools], config.batch_per_domain, seed, total, start, replica)
    batches = step_batches(
        pools, transform, sampler, num_workers=num_workers, pin_memory=device.type == "cuda", device=device
    )
    encoder: nn.Module = backbone.image_encoder
    if replica.world_size > 1:
        # Gradients are averaged over the ranks; CMAttn sees the gathered batch on every rank, so its
        # gradients agree without communication.
        encoder = DistributedDataParallel(visual, device_ids=[device.index] if device.type == "cuda" else None)
        if backbone.compile_backend is not None:
            encoder = torch.compile(encoder, backend=backbone.compile_backend)  # compile outside DDP, as torch advises
    visual.train()
    step = start
    pending: tuple[int, Tensor] | None = None
    progress = tqdm(total=total, initial=start, desc=method, unit="step", disable=None if replica.is_main else True,
                    leave=False)
    # a stop signal saves the state at the next step boundary and stops there
    boundaries = StepBoundaries(LateAgreement(replica, device) if replica.world_size > 1 else None)
    for images, labels, _domains in boundaries.steps(batches):
        images = images.to(device, non_blocking=True)
        if replica.world_size > 1:
            labels = sampler.labels(step, pools)
        labels = labels.to(device, non_blocking=True)
        loss, weights = train_step(
            backbone, cmattn, heads, images, labels, objective, config, optimizer,
            encoder=encoder, replica=replica, domains=len(pools),
        )
        progress.update()
        # Checking the previous step's loss lets the device run ahead instead of waiting at every step.
        if pending is not None:
            check_finite(pending[1], pending[0], method)
        pending = (step, loss.total.detach())
        scheduler.step()
        step += 1
        if average is not None:
            average.update(visual)
        if step % config.steps_per_epoch == 0 or step == total:
            record = {"step": step, "loss": loss.total.item(), "ce": loss.ce.item()}
            if cmattn is not None:
                record["weights"] = [round(w, 4) for w in weights.mean(0).tolist()]
            history.append(record)
            logger.info("%s: step %d/%d loss %.4f", method, step, total, record["loss"])
        if objective.wise_mode == "per-epoch" and step % config.steps_per_epoch == 0:
            load_module_state(visual, wise_ft(pretrained, _visual_state(visual), objective.wise_alpha))
        stopping = boundaries.requested()
        if step % config.checkpoint_every == 0 or step == stop_at_step or stopping:
            check_finite(pending[1], pending[0], method)  # never save a diverged state
            save(step)
        if step == stop_at_step:
            break
        if stopping:
            progress.close()
            boundaries.stop(step, total)
    progress.close()
    if pending is not None:
        check_finite(pending[1], pending[0], method)
    visual.eval()
    for p in visual.parameters():
        p.requires_grad_(False)

    if step < total:
        return FinetuneResult(_visual_state(visual), _cmattn_state(cmattn), history, step, start)
    if average is not None:
        final = _visual_state(average.module)
    elif objective.wise_mode == "end":
        final = wise_ft(pretrained, _visual_state(visual), objective.wise_alpha)
    else:  # per-epoch: the last epoch's write-back is the result
        final = _visual_state(visual)
    load_module_state(visual, final)
    return FinetuneResult(final, _cmattn_state(cmattn), history, step, start)


def _check_room_for_state(checkpoint: Path, parameters: Sequence[nn.Parameter], averaged: bool) -> None:
    """Refuse to start training when the disk lacks room for its resumable state: the weights, AdamW's two
    moments and the moving average, twice over (a new state is written beside the old before replacing it)."""
    weights = sum(p.numel() * p.element_size() for p in parameters)
    state = weights * (3 + int(averaged))
    existing = checkpoint.stat().st_size if checkpoint.is_file() else 0
    require_free_space(checkpoint.parent, max(0, 2 * state - existing),
                       f"the resumable training state {CHECKPOINT_FILE}")


def _cmattn_state(cmattn: CMAttn | None) -> dict[str, Tensor] | None:
    return None if cmattn is None else {k: v.detach().cpu().clone() for k, v in cmattn.state_dict().items()}

