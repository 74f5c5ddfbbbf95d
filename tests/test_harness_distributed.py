"""Data-parallel fine-tuning: two gloo processes on the CPU give the single-process result."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from guidg.bases import get_base
from guidg.distributed import Replica, check_divisible
from guidg.finetune import FinetuneConfig, StepSampler
from guidg.methods.guidg import GuidgConfig, new_cmattn
from guidg.presets import get_preset
from imagenet_dg.errors import ImageNetDGError

CONFIG = FinetuneConfig(batch_per_domain=4, lr=1e-3, weight_decay=0.0, epochs=3, steps_per_epoch=1,
                        checkpoint_every=100, randaugment=False)


def heads_for(classes: int, dim: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(3)
    return torch.nn.functional.normalize(torch.randn(3, classes, dim, generator=generator), dim=-1)


def finetune(pools, classes: int):
    from guidg.backbone import TINY_SPEC, load_backbone
    from guidg.finetune import finetune_image_encoder

    backbone = load_backbone(TINY_SPEC)
    heads = heads_for(classes, backbone.embed_dim)
    result = finetune_image_encoder(backbone, pools, heads, CONFIG, get_base("ueo").objective(get_preset("paper")),
                                    cmattn=new_cmattn(heads, GuidgConfig(), 2), seed=2, method="guidg+ueo")
    return result


def _worker(rank: int, world_size: int, port: int, pools, classes: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        result = finetune(pools, classes)
        if rank == 0:
            torch.save({"visual": result.visual_state, "cmattn": result.cmattn_state, "history": result.history}, out)
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_each_rank_takes_its_slots_and_the_order_puts_them_back() -> None:
    full = StepSampler([10, 7], per_domain=4, seed=1, total=2)
    shares = [StepSampler([10, 7], per_domain=4, seed=1, total=2, replica=Replica(r, 2)).share(0) for r in (0, 1)]
    assert [len(s) for s in shares] == [4, 4]
    joined = shares[0] + shares[1]
    order = Replica(0, 2).order(domains=2, per_domain=4)
    assert [joined[i] for i in order.tolist()] == full.items(0)


def test_a_batch_that_does_not_split_evenly_is_refused() -> None:
    with pytest.raises(ImageNetDGError, match="does not split evenly over 3 processes"):
        check_divisible(4, Replica(0, 3))


def test_two_gloo_processes_fine_tune_as_one_process_does(mini_task, tmp_path) -> None:
    pools = [mini_task.guide[d] for d in mini_task.sources]
    classes = len(mini_task.class_ids)
    out = tmp_path / "ranked.pt"
    mp.spawn(_worker, args=(2, free_port(), pools, classes, str(out)), nprocs=2, join=True)
    parallel = torch.load(out, weights_only=True)
    single = finetune(pools, classes)

    # The loss of every step is the whole batch's, in the same order: equal up to floating-point order.
    single_losses = [h["loss"] for h in single.history]
    assert [h["loss"] for h in parallel["history"]] == pytest.approx(single_losses, rel=1e-4)
    routed = [w for h in parallel["history"] for w in h["weights"]]
    assert routed == pytest.approx([w for h in single.history for w in h["weights"]], abs=1e-3)
    # The weights moved the same way (Adam's first steps amplify rounding only where a gradient is ~0).
    from guidg.backbone import TINY_SPEC, load_backbone

    start = {k: v.clone() for k, v in load_backbone(TINY_SPEC).model.visual.state_dict().items()}
    moved = sum(float((single.visual_state[k] - start[k]).norm() ** 2) for k in start) ** 0.5
    apart = sum(float((parallel["visual"][k] - single.visual_state[k]).norm() ** 2) for k in start) ** 0.5
    assert moved > 0 and apart < 0.05 * moved
    for name, tensor in single.cmattn_state.items():
        torch.testing.assert_close(parallel["cmattn"][name], tensor, rtol=1e-2, atol=1e-4)
