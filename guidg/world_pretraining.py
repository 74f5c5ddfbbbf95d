"""Contrastive pretraining of the tiny CLIP on captioned pictures of the miniature world.

This is how the packaged ``imagenet-dg-tiny`` / ``mini`` weights were made (:data:`WEIGHTS_FILE`): a tiny CLIP
learns every concept of the world (the twelve miniature ImageNet classes and every class of the miniature
suites) the way real CLIP learns from the web: from captioned pictures ("a photo of a goldfish.", "a pencil
sketch of a giraffe.", "a cartoon of a TV."), mostly photographs (plain photographs, product shots, street
scenes, dim indoor photographs), some pencil sketches, cartoons, clipart, paintings and trail-camera frames, a
third of the views shown in grey (:class:`PretrainingConfig` has the counts). Every caption of a concept counts as a positive
of every picture of it (:func:`contrastive_loss`), so "a photo of a dog." comes to mean the dog's structure in
any style, and the single prompt zero-shot uses works on every miniature target.

Photographs alone are not enough: a model shown only them reads colour, not structure, and sends every grey
pencil sketch to the one grey concept (the elephant) or the any-colour ones (the person); that made zero-shot
exactly chance on the miniature PACS sketch target. What the pretraining never shows is left for fine-tuning:
the corrupted photographs of ImageNet-A, the renditions of ImageNet-R other than cartoons and paintings
(graffiti, stickers, tattoos, toys), quick doodles, infographics, and TerraIncognita's four fixed camera
locations (the trail-camera frames have a scene of their own each); fine-tuning on a task's sources has
something to add there. The pictures are drawn from seeds that the miniature releases
and suites never use. Other styles, per-style counts and caption noise
(:attr:`PretrainingConfig.caption_noise`) can be chosen for other experiments.

The same :class:`PretrainingConfig` gives byte-identical weights on CPU: every random draw comes from seeded
generators, the computation is single-threaded and deterministic, and the file is written with sorted keys.

The weights are synthetic-world weights: they know nothing of real images and must never be reported as a
real pretrained model.

Reproduce the packaged file with ``python -m guidg.world_pretraining --out guidg/weights/imagenet-dg-tiny-mini.safetensors``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from guidg.backbone import TextEncoder, register_model_configs
from guidg.packaged_weights import pack
from imagenet_dg.atomic import write_bytes_atomic
from imagenet_dg.world import CONCEPTS, draw

logger = logging.getLogger(__name__)

ARCH = "imagenet-dg-tiny"
"""The architecture pretrained (a registered open_clip config shipped in ``guidg/model_configs``)."""

TAG = "mini"
"""The pretrained tag under which the packaged weights are loaded: ``--model imagenet-dg-tiny --pretrained mini``."""

WEIGHTS_FILE = Path(__file__).parent / "weights" / "imagenet-dg-tiny-mini.safetensors"
"""The packaged weights."""

SPARSE_TABLES = ("token_embedding.weight",)
"""Tables stored by their non-zero rows (:mod:`guidg.packaged_weights`): the captions use 105 of 49,408 tokens."""

CAPTIONS: dict[str, tuple[str, ...]] = {
    "photo": ("a photo of a {}.", "a photo of the {}.", "a picture of a {}.", "a close-up photo of a {}.",
              "a photo of my {}.", "a blurry photo of a {}.", "a bright photo of a {}.", "a {} in the wild."),
    "photo-v2": ("a photo of a {}.", "a photo of the {}.", "a picture of a {}.", "a photo of a small {}.",
                 "a low resolution photo of a {}.", "a dark photo of the {}.", "a cropped photo of a {}.",
                 "a {} outdoors."),
    "product": ("a product photo of a {}.", "a photo of a {} on a white background.", "a studio photo of a {}.",
                "a catalogue photo of the {}."),
    "scene": ("a photo of a {} in a street.", "a photo of a small {} far away.", "a busy scene with a {}.",
              "a snapshot of a {}."),
    "indoor": ("a dark photo of a {}.", "a photo of a {} indoors.", "a photo of a {} in a room.",
               "a dim photo of the {}."),
    "sketch": ("a sketch of a {}.", "a pencil sketch of a {}.", "a drawing of a {}.", "a black and white drawing "
               "of the {}.", "a line drawing of a {}.", "a doodle of a {}.", "a sketch of the {}.",
               "a pencil drawing of a {}."),
    "cartoon": ("a cartoon of a {}.", "a cartoon {}.", "a drawing of a cartoon {}.", "an illustration of a {}."),
    "clipart": ("a clipart of a {}.", "clip art of a {}.", "an icon of a {}.", "a vector drawing of a {}."),
    "trail-camera": ("a trail camera photo of a {}.", "a camera trap photo of a {}.", "a night photo of a {}.",
                     "a photo of a {} in the woods."),
    "painting": ("a painting of a {}.", "an oil painting of a {}.", "art of a {}.", "a painting of the {}."),
}
"""Caption templates per style pretrained on; a picture's caption is one of its style's, drawn at random."""


@dataclass(frozen=True)
class PretrainingConfig:
    """Everything that determines the weights."""

    seed: int = 0
    images_per_concept_and_style: int | tuple[int, ...] = (40, 10, 20, 10, 20, 10, 10, 10, 10)
    """Pictures of each concept in each style: one number for every style, or one per entry of ``styles``."""
    image_size: int = 64
    """Size the pictures are drawn at (that of the miniature releases); the model's transform takes them to 32."""
    styles: tuple[str, ...] = ("photo", "product", "scene", "indoor", "sketch", "cartoon", "clipart", "painting",
                               "trail-camera")
    """World styles pretrained on (each needs its :data:`CAPTIONS`): photographs of four looks, pencil sketches,
    three kinds of rendition and trail-camera frames (anywhere, not TerraIncognita's locations)."""
    steps: int = 1500
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.1
    warmup_steps: int = 30
    shift: int = 3
    """Largest random translation (pixels, at model resolution) of each view, with a random horizontal flip."""
    caption_noise: float = 0.0
    """Fraction of pictures whose caption names another concept, drawn at random: web captions are noisy."""
    grey: float = 0.3
    """Fraction of the views shown in shades of grey (a black-and-white photograph of the same picture)."""
    small: float = 0.0
    """Fraction of the views shrunk to half to four fifths of their size (edges extended): things seen from afar."""

    def images_of(self, style_index: int) -> int:
        """Pictures of each concept drawn in ``styles[style_index]``."""
        counts = self.images_per_concept_and_style
        return counts if isinstance(counts, int) else counts[style_index]

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def _world_seed(config: PretrainingConfig, style_index: int, concept_index: int, image: int) -> tuple[int, ...]:
    # A 5-element seed, unlike the 4-element seeds of the miniature releases: never the same pictures.
    return (config.seed, 9_000_001, style_index, concept_index, image)


def _pictures(config: PretrainingConfig, transform) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The pretraining pictures as preprocessed tensors (N, 3, S, S), the concept their caption names (the one
    shown, except for the ``caption_noise`` fraction) and their style index."""
    images, concepts, styles = [], [], []
    for s, style in enumerate(config.styles):
        for c, concept in enumerate(CONCEPTS):
            for i in range(config.images_of(s)):
                images.append(transform(draw(concept, style, _world_seed(config, s, c, i), config.image_size)))
                concepts.append(c)
                styles.append(s)
    named = torch.tensor(concepts)
    generator = torch.Generator().manual_seed(config.seed + 7_000_003)
    noisy = torch.rand(len(named), generator=generator) < config.caption_noise
    other = torch.randint(0, len(CONCEPTS), (len(named),), generator=generator)
    return torch.stack(images), torch.where(noisy, other, named), torch.tensor(styles)


def _augment(images: torch.Tensor, shift: int, grey: float, small: float,
             normalise: tuple[torch.Tensor, torch.Tensor], generator: torch.Generator) -> torch.Tensor:
    """Random translation by up to ``shift`` pixels (edge padding), random horizontal flips, a ``grey``
    fraction of the views turned to grey (their luminance, in the transform's normalised units) and a ``small``
    fraction shrunk by 0.5 to 0.8 about the centre."""
    n, _, h, w = images.shape
    factor = torch.where(torch.rand(n, generator=generator) < small,
                         0.5 + 0.3 * torch.rand(n, generator=generator), torch.ones(n))
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0 / factor
    grid = F.affine_grid(theta, [n, 3, h, w], align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    padded = F.pad(images, (shift, shift, shift, shift), mode="replicate")
    dx = torch.randint(0, 2 * shift + 1, (n,), generator=generator)
    dy = torch.randint(0, 2 * shift + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None].expand(n, 3, h, w + 2 * shift)
    out = torch.gather(padded, 2, rows)
    cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, None, :].expand(n, 3, h, w)
    out = torch.gather(out, 3, cols)
    flip = torch.rand(n, generator=generator) < 0.5
    out = torch.where(flip[:, None, None, None], out.flip(3), out)
    mean, std = (v[None, :, None, None] for v in normalise)
    luminance = ((out * std + mean) * torch.tensor([0.299, 0.587, 0.114])[None, :, None, None]).sum(1, keepdim=True)
    greyed = torch.rand(n, generator=generator) < grey
    return torch.where(greyed[:, None, None, None], (luminance - mean) / std, out)


def _normalisation(transform) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and standard deviation of the model transform's Normalize step."""
    step = next(t for t in transform.transforms if hasattr(t, "mean") and hasattr(t, "std"))
    return torch.tensor(step.mean, dtype=torch.float32), torch.tensor(step.std, dtype=torch.float32)


def _lr_at(step: int, config: PretrainingConfig) -> float:
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(config.steps - config.warmup_steps, 1)
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def contrastive_loss(image_features: torch.Tensor, text_features: torch.Tensor, concepts: torch.Tensor,
                     logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric CLIP loss where every pair showing the same concept counts as a positive.

    A batch holds many pictures of each concept; treating their captions as negatives of one another (as plain
    CLIP would) would push apart what must come together.
    """
    logits = logit_scale * F.normalize(image_features, dim=-1) @ F.normalize(text_features, dim=-1).T
    same = (concepts[:, None] == concepts[None, :]).float()
    targets = same / same.sum(dim=1, keepdim=True)
    return 0.5 * (torch.sum(-targets * F.log_softmax(logits, dim=1), dim=1).mean()
                  + torch.sum(-targets * F.log_softmax(logits.T, dim=1), dim=1).mean())


def _used_token_ids(tokenizer, names: Sequence[str]) -> torch.Tensor:
    texts = [t.format(n) for templates in CAPTIONS.values() for t in templates for n in names]
    return torch.unique(tokenizer(texts))


def pretrain(config: PretrainingConfig = PretrainingConfig()) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Train the tiny CLIP on the world and return its state dict (float16, unused token rows zero) and the
    metadata recorded with it. Deterministic on CPU for a given ``config``."""
    register_model_configs()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # GEMM blocking depends on the thread count; one thread gives the same bits anywhere
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            model, _, transform = open_clip.create_model_and_transforms(ARCH, pretrained=None, precision="fp32")
            tokenizer = open_clip.get_tokenizer(ARCH)
            return _train(model, transform, tokenizer, config)
    finally:
        torch.set_num_threads(threads)


def _train(model, transform, tokenizer, config: PretrainingConfig) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    started = time.perf_counter()
    images, concepts, styles = _pictures(config, transform)
    normalise = _normalisation(transform)
    drawn = time.perf_counter() - started
    names = list(CONCEPTS)
    # Only the rows of the tokens the captions hold are trained, as a small table of their own: the full
    # 49,408-row embedding would cost more to update each step than the rest of the model.
    used = _used_token_ids(tokenizer, names)
    local = torch.full((int(used.max()) + 1,), -1, dtype=torch.long)
    local[used] = torch.arange(len(used))
    table = torch.nn.Parameter(model.token_embedding.weight.detach()[used].clone())
    model.token_embedding.weight.requires_grad_(False)
    text = TextEncoder(model)
    captions = {style: tokenizer([t.format(n) for n in names for t in CAPTIONS[style]]) for style in config.styles}
    per_name = {style: len(CAPTIONS[style]) for style in config.styles}
    no_decay = {"positional_embedding", "logit_scale", "visual.positional_embedding", "visual.class_embedding"}
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [p for n, p in trained if p.ndim >= 2 and n not in no_decay]
    rest = [p for n, p in trained if not (p.ndim >= 2 and n not in no_decay)] + [table]
    optimiser = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": rest, "weight_decay": 0.0}], lr=config.lr, betas=(0.9, 0.98), eps=1e-6)
    generator = torch.Generator().manual_seed(config.seed)
    model.train()
    for step in range(config.steps):
        for group in optimiser.param_groups:
            group["lr"] = _lr_at(step, config)
        index = torch.randint(0, len(images), (config.batch_size,), generator=generator)
        template = torch.randint(0, 1 << 30, (config.batch_size,), generator=generator)
        tokens = torch.stack([
            captions[config.styles[s]][c * per_name[config.styles[s]] + t % per_name[config.styles[s]]]
            for s, c, t in zip(styles[index].tolist(), concepts[index].tolist(), template.tolist())
        ])
        positions = text.pool_positions(tokens)
        tokens = tokens[:, : int(positions.max()) + 1]  # causal attention: later positions change nothing
        batch = _augment(images[index], config.shift, config.grey, config.small, normalise, generator)
        loss = contrastive_loss(model.encode_image(batch), text(table[local[tokens]], positions), concepts[index],
                                model.logit_scale.exp())
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 100 == 0 or step == config.steps - 1:
            logger.info("step %d/%d loss %.4f", step, config.steps, loss.item())
    model.eval()
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()
             if v.is_floating_point()}
    state.update({k: v.detach().contiguous() for k, v in model.state_dict().items() if not v.is_floating_point()})
    # Rows of tokens that no caption holds carry only their random initialisation: set to zeros, which says so
    # and lets the file keep only the used rows (SPARSE_TABLES).
    embedding = torch.zeros_like(state["token_embedding.weight"])
    embedding[used] = table.detach().to(torch.float16)
    state["token_embedding.weight"] = embedding
    metadata = {
        "format": "pt",
        "synthetic": "true",
        "description": "imagenet-dg-tiny CLIP pretrained on the synthetic miniature world of imagenet_dg.world "
                       f"({', '.join(config.styles)} pictures only); not a model of real images",
        "produced_by": "python -m guidg.world_pretraining",
        "config": json.dumps(config.to_dict(), sort_keys=True),
        "concepts": json.dumps(names),
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "seconds_drawing": f"{drawn:.1f}",
        "seconds_total": f"{time.perf_counter() - started:.1f}",
    }
    return state, metadata


def save_weights(state: dict[str, torch.Tensor], metadata: dict[str, str], out: str | os.PathLike[str]) -> str:
    """Write ``state`` as safetensors at ``out`` atomically, its :data:`SPARSE_TABLES` packed by their non-zero
    rows; return the SHA-256 of the dense tensors' bytes (the timings in the metadata differ between runs, the
    tensors do not)."""
    tmp = Path(out).with_name(f".{Path(out).name}.tmp")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    packed, packed_metadata = pack(state, metadata, SPARSE_TABLES)
    save_file({k: packed[k] for k in sorted(packed)}, str(tmp), metadata=packed_metadata)
    data = tmp.read_bytes()
    tmp.unlink()
    write_bytes_atomic(Path(out), data)
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode("utf-8"))
        digest.update(state[key].numpy().tobytes())
    return digest.hexdigest()


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m guidg.world_pretraining --out FILE [--seed N] [--steps N]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=WEIGHTS_FILE)
    defaults = PretrainingConfig()
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--images", type=int, default=defaults.images_per_concept_and_style,
                        help="pictures per concept and style")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logger.setLevel(logging.INFO)
    config = dataclasses.replace(defaults, seed=args.seed, steps=args.steps,
                                 images_per_concept_and_style=args.images)
    started = time.perf_counter()
    state, metadata = pretrain(config)
    digest = save_weights(state, metadata, args.out)
    print(f"{args.out}: {os.path.getsize(args.out):,} bytes, tensors sha256 {digest}, "
          f"{time.perf_counter() - started:.0f} s ({metadata['seconds_drawing']} s drawing)")


if __name__ == "__main__":
    main()
