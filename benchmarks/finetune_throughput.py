"""Throughput of GuiDG step 2 (guided fine-tuning of the image encoder) in images per second.

Two measurements:

- ``compute``: the training step of ``guidg.finetune.train_step`` (image encoder forward under the
  backbone's autocast, CMAttn over d experts, the guided loss, backward, AdamW) on batches already on the
  device, so data loading is left out. Its floating-point work is counted once with
  ``torch.utils.flop_counter.FlopCounterMode``, which gives the achieved TFLOP/s and, with the device's bf16
  dense peak, the fraction of peak.
- ``end-to-end`` (``--end-to-end``): ``guidg.finetune.finetune_image_encoder`` on a pool of generated JPEG
  images with ``--workers`` loader processes, so decoding and RandAugment are included.

Random weights are used: speed does not depend on them. Run on a GPU:

    python benchmarks/finetune_throughput.py --device cuda --arch ViT-B-16 --end-to-end --workers 12
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from guidg.backbone import BackboneSpec, load_backbone
from guidg.bases import get_base
from guidg.finetune import FinetuneConfig, finetune_image_encoder, train_step
from guidg.methods.guidg import GuidgConfig, new_cmattn
from guidg.presets import get_preset
from imagenet_dg.loading import LabeledImages

BF16_DENSE_PEAK_TFLOPS = {
    "H100 SXM": 989.4,
    "H100 NVL": 835.0,
    "H100 PCIe": 756.0,
    "H200": 989.4,
    "A100": 312.0,
}
"""Vendor bf16 dense tensor-core peaks (no sparsity), by device-name fragment."""


def peak_tflops(device_name: str) -> float | None:
    """The bf16 dense peak of a device, from its name; None when unknown."""
    if "H100" in device_name and ("PCIe" in device_name or "PCIE" in device_name):
        return BF16_DENSE_PEAK_TFLOPS["H100 PCIe"]
    if "H100" in device_name and "NVL" in device_name:
        return BF16_DENSE_PEAK_TFLOPS["H100 NVL"]
    for fragment, peak in BF16_DENSE_PEAK_TFLOPS.items():
        if fragment.split()[0] in device_name:
            return peak
    return None


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_compute(args: argparse.Namespace, device: torch.device) -> dict:
    """Images/s and TFLOP/s of the training step on device-resident batches."""
    backbone = load_backbone(BackboneSpec(args.arch, None), device)
    size = backbone.image_size
    batch = args.batch_per_domain * args.domains
    config = FinetuneConfig(batch_per_domain=args.batch_per_domain)
    heads = torch.nn.functional.normalize(torch.randn(args.domains, args.classes, backbone.embed_dim, device=device), dim=-1)
    cmattn = new_cmattn(heads, GuidgConfig(), 0).to(device)
    erm = get_base("erm").objective(get_preset("paper"))
    visual = backbone.model.visual.train()
    visual.requires_grad_(True)
    optimizer = torch.optim.AdamW(list(visual.parameters()) + list(cmattn.parameters()), lr=config.lr, weight_decay=config.weight_decay)
    images = torch.randn(batch, 3, size, size, device=device)
    labels = torch.randint(args.classes, (batch,), device=device)
    if args.channels_last:
        visual.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        train_step(backbone, cmattn, heads, images, labels, erm, config, optimizer)

    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    flops_per_step = counter.get_total_flops()
    for _ in range(args.warmup):
        step()
    synchronize(device)
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    result = {
        "arch": args.arch,
        "batch": batch,
        "seconds_per_step": seconds,
        "images_per_second": batch / seconds,
        "tflop_per_step": flops_per_step / 1e12,
        "achieved_tflops": flops_per_step / seconds / 1e12,
    }
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = args.peak_tflops or peak_tflops(name)
        result["device_name"] = name
        result["peak_bf16_tflops"] = peak
        result["fraction_of_peak"] = result["achieved_tflops"] / peak if peak else None
        result["max_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return result


def measure_end_to_end(args: argparse.Namespace, device: torch.device) -> dict:
    """Images/s of ``finetune_image_encoder`` on generated JPEGs, with data loading and augmentation."""
    import numpy as np
    from PIL import Image

    backbone = load_backbone(BackboneSpec(args.arch, None), device)
    steps = args.warmup + args.steps
    config = FinetuneConfig(batch_per_domain=args.batch_per_domain, epochs=1, steps_per_epoch=steps, checkpoint_every=10**9)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        pools = []
        for domain in range(args.domains):
            paths = []
            for index in range(64):
                path = Path(folder) / f"d{domain}_{index}.jpg"
                Image.fromarray(rng.integers(0, 255, (375, 500, 3), dtype=np.uint8)).save(path, quality=90)
                paths.append(path)
            labels = tuple(int(i % args.classes) for i in range(len(paths)))
            pools.append(LabeledImages(tuple(paths), labels, (f"d{domain}",) * len(paths)))
        heads = torch.nn.functional.normalize(torch.randn(args.domains, args.classes, backbone.embed_dim), dim=-1)
        synchronize(device)
        start = time.perf_counter()
        finetune_image_encoder(
            backbone, pools, heads, config, get_base("erm").objective(get_preset("paper")), seed=0,
            method="benchmark", cmattn=new_cmattn(heads, GuidgConfig(), 0), num_workers=args.workers,
        )
        synchronize(device)
        seconds = time.perf_counter() - start
    batch = args.batch_per_domain * args.domains
    return {"steps": steps, "seconds": seconds, "images_per_second": steps * batch / seconds, "workers": args.workers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="ViT-B-16")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-per-domain", type=int, default=16)
    parser.add_argument("--domains", type=int, default=3)
    parser.add_argument("--classes", type=int, default=200)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--peak-tflops", type=float, default=None, help="bf16 dense peak, if the device is not known")
    parser.add_argument("--end-to-end", action="store_true")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = True
    results = {"compute": measure_compute(args, device)}
    if args.end_to_end:
        results["end_to_end"] = measure_end_to_end(args, device)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
