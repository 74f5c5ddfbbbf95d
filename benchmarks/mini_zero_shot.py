"""Zero-shot accuracy of the tiny CLIP's world weights on every miniature target, beside chance.

    python benchmarks/mini_zero_shot.py [--weights FILE] [--data FOLDER]

Writes the miniature releases and every miniature suite (default sizes) into ``--data`` (a temporary folder
unless given; an existing one is reused), then scores single-prompt zero-shot classification on every target:
the ImageNet-DG targets (ImageNet val, -A and -R over their tasks' classes) and every domain of every
miniature suite, over all of the target's images and over its test part alone (the fewshot protocol's 20%, what
``imagenet-dg evaluate`` scores). ``--weights`` takes a checkpoint file (default: the packaged
``imagenet-dg-tiny`` / ``mini`` weights). Everything here is synthetic.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import torch
from PIL import Image

from guidg.backbone import TINY_MODEL, Backbone, BackboneSpec, load_backbone
from guidg.world_pretraining import TAG
from guidg.zeroshot import zeroshot_classifier
from imagenet_dg.layouts import scan, scan_domain
from imagenet_dg.mini import make_mini_releases
from imagenet_dg.mini_suites import make_mini_suite
from imagenet_dg.protocols import partition_domain
from imagenet_dg.suites import SUITES, wordnet_name


def _predict(backbone: Backbone, paths: list[Path], names: list[str]) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the releases' corrupt-EXIF quirk
        images = torch.stack([backbone.eval_transform(Image.open(p).convert("RGB")) for p in paths])
    classifier = zeroshot_classifier(backbone, names)
    with torch.no_grad():
        return (backbone.encode_images(images) @ classifier.T).argmax(dim=1)


def zero_shot_rows(backbone: Backbone, data: Path) -> list[tuple[str, str, int, float, int, float, float]]:
    """(suite, target, images, accuracy, test images, test accuracy, chance) for every miniature target, the
    accuracies in percent."""
    rows = []
    releases = make_mini_releases(data / "mini-releases")
    for domain, wnids in (("imagenet-val", releases.wnids), ("imagenet-a", releases.a_wnids),
                          ("imagenet-r", releases.r_wnids)):
        table = scan_domain(domain, releases.paths[domain])
        table_rows = table.table[table.table["class_id"].isin(wnids)]
        labels = torch.tensor([list(wnids).index(w) for w in table_rows["class_id"]])
        predicted = _predict(backbone, [table.root / p for p in table_rows["path"]], [wordnet_name(w) for w in wnids])
        accuracy = 100.0 * (predicted == labels).float().mean().item()
        rows.append(("mini imagenet-dg", domain, len(labels), accuracy, len(labels), accuracy, 100.0 / len(wnids)))
    for suite in (s for s in SUITES.values() if s.miniature_of is not None):
        written = make_mini_suite(suite.name, data / suite.name)
        found = scan(suite, root=written.root)
        for domain in suite.domain_ids:
            table = found.tables[domain]
            labels = torch.tensor([suite.classes.index(c) for c in table["class_id"]])
            predicted = _predict(backbone, [found.roots[domain] / p for p in table["path"]], list(suite.prompt_names()))
            test = torch.tensor((partition_domain(table, domain)["pool"] == "test").to_numpy())
            rows.append((suite.name, domain, len(labels), 100.0 * (predicted == labels).float().mean().item(),
                         int(test.sum()), 100.0 * (predicted[test] == labels[test]).float().mean().item(),
                         100.0 / len(suite.classes)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=TAG, help="a checkpoint file (default: the packaged mini weights)")
    parser.add_argument("--data", type=Path, help="folder for the miniature data (default: a temporary one)")
    args = parser.parse_args()
    backbone = load_backbone(BackboneSpec(TINY_MODEL, args.weights))
    with tempfile.TemporaryDirectory() as temporary:
        rows = zero_shot_rows(backbone, args.data or Path(temporary))
    print(f"{'suite':<22} {'target':<14} {'images':>6} {'all %':>6} {'test':>5} {'test %':>6} {'chance':>6}  x chance")
    for suite, target, n, accuracy, n_test, test_accuracy, chance in rows:
        print(f"{suite:<22} {target:<14} {n:>6} {accuracy:6.1f} {n_test:>5} {test_accuracy:6.1f} {chance:6.1f}  "
              f"{accuracy / chance:4.1f}")
    print(f"lowest: {min(r[3] / r[6] for r in rows):.2f} x chance over all images, "
          f"{min(r[5] / r[6] for r in rows):.2f} x over the test parts")


if __name__ == "__main__":
    main()
