"""Time of one training step of CLIP-LoRA and of MaPLe, and what a run with the default settings costs.

Both methods change the image features at every step, so every step runs both towers forward and backward:

- ``clip-lora``: a batch of 32 images through the adapted image tower, the C class prompts through the adapted
  text tower, 100 cos logits, cross-entropy, backward into the adapters of every layer, AdamW.
- ``maple``: a batch of 4 images through the prompted image tower, the C class prompts through the prompted
  text tower, cross-entropy, backward into the prompts and couplings, SGD.

Images are random tensors already on the device (loading and augmentation are measured by
``finetune_throughput.py`` and ``augment_rate.py``); the class names are placeholders of the length of real
ones. Models: the tiny test model and ViT-B/16, with random weights (no timing depends on their values). MaPLe
uses J = min(9, layers). The run estimate multiplies the median step time by the default number of steps for a
16-shot task with C classes and 3 sources: 500 x 16 for CLIP-LoRA, 5 epochs of 16 C 3 / 4 steps for MaPLe.

Usage::

    python benchmarks/lora_maple_step.py [--models tiny vit-b-16] [--classes 7 200] [--steps 3] [--device cpu|cuda]
        [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F

from guidg.backbone import TINY_MODEL, BackboneSpec, load_backbone
from guidg.clip_lora import ClipLoRAConfig
from guidg.lora import apply_lora, lora_parameter_count, lora_parameters
from guidg.losses import LOGIT_SCALE
from guidg.maple import MaPLeConfig, MaPLeModel
from guidg.zeroshot import photo_of_a

MODELS = {"tiny": TINY_MODEL, "vit-b-16": "ViT-B-16"}
SHOTS, SOURCES = 16, 3


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(step, steps: int, device: torch.device) -> float:
    step()  # one untimed step: allocation, kernel selection
    times = []
    for _ in range(steps):
        _sync(device)
        start = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def clip_lora_case(arch: str, classes: int, steps: int, device: str) -> dict[str, Any]:
    backbone = load_backbone(BackboneSpec(arch, None), device)
    config = ClipLoRAConfig()
    backbone.model.requires_grad_(False)
    layers = apply_lora(backbone.model, config.rank, config.alpha, config.dropout, config.scaling)
    for layer in layers.values():
        layer.train()
    optimizer = torch.optim.AdamW(lora_parameters(layers).values(), lr=config.lr, weight_decay=config.weight_decay)
    tokens = backbone.tokenizer([photo_of_a(f"class name {i}") for i in range(classes)]).to(backbone.device)
    size = backbone.image_size
    images = torch.randn(config.batch_size, 3, size, size, device=backbone.device)
    labels = torch.randint(classes, (config.batch_size,), device=backbone.device)

    def step() -> None:
        with backbone.autocast():
            text = backbone.text.encode_tokens(tokens)
            image = backbone.image_encoder(images)
        logits = LOGIT_SCALE * F.normalize(image.float(), dim=-1) @ F.normalize(text.float(), dim=-1).T
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(logits, labels).backward()
        optimizer.step()

    seconds = _time(step, steps, backbone.device)
    run_steps = config.iterations_per_shot * SHOTS
    return {"method": "clip-lora", "seconds_per_step": seconds, "n_trainable": lora_parameter_count(layers),
            "run_steps": run_steps, "run_hours": seconds * run_steps / 3600}


def maple_case(arch: str, classes: int, steps: int, device: str) -> dict[str, Any]:
    backbone = load_backbone(BackboneSpec(arch, None), device)
    depth = min(9, len(backbone.model.visual.transformer.resblocks), len(backbone.text.transformer.resblocks))
    config = MaPLeConfig(depth=depth)
    backbone.model.requires_grad_(False)
    model = MaPLeModel(backbone, [f"class name {i}" for i in range(classes)], config, seed=0)
    optimizer = torch.optim.SGD(model.prompts.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    size = backbone.image_size
    images = torch.randn(config.batch_size, 3, size, size, device=backbone.device)
    labels = torch.randint(classes, (config.batch_size,), device=backbone.device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()

    seconds = _time(step, steps, backbone.device)
    run_steps = config.epochs * (SHOTS * classes * SOURCES // config.batch_size)
    return {"method": "maple", "depth": depth, "seconds_per_step": seconds, "n_trainable": model.prompts.n_trainable,
            "run_steps": run_steps, "run_hours": seconds * run_steps / 3600}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["tiny", "vit-b-16"])
    parser.add_argument("--classes", nargs="+", type=int, default=[7, 200])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json")
    args = parser.parse_args()
    rows = []
    machine = platform.processor() or platform.machine()
    print(f"load average {os.getloadavg()[0]:.2f}; torch {torch.__version__}; {machine}")
    for name in args.models:
        for classes in args.classes:
            for case in (clip_lora_case, maple_case):
                row = {"model": name, "classes": classes, **case(MODELS[name], classes, args.steps, args.device)}
                rows.append(row)
                print(f"{name:9s} C={classes:4d} {row['method']:9s} {row['seconds_per_step'] * 1000:9.1f} ms/step  "
                      f"trainable {row['n_trainable']:>9,d}  default run {row['run_steps']:6d} steps "
                      f"= {row['run_hours']:.2f} h")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"device": args.device, "load_average": os.getloadavg(), "rows": rows}, out, indent=2)


if __name__ == "__main__":
    main()
