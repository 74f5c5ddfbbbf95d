"""The benchmark suites as data: their domains, classes, folder layouts and scoring, in one registry.

A suite is a set of image domains sharing one class list, evaluated leave-one-domain-out. ImageNet-DG is one
(its tasks a, i and r, built by :mod:`imagenet_dg.build`); the standard domain-generalisation suites PACS,
VLCS, OfficeHome, TerraIncognita and DomainNet are the others, laid out on disk the way DomainBed's download
script leaves them: ``<suite folder>/<domain folder>/<class folder>/<image>``. Classes are indexed by their
sorted folder names (plain code-point order, as torchvision's ImageFolder sorts them); the name put in a
prompt is the folder name with ``_`` read as a space.

Every suite has a miniature twin (``mini-pacs``, ...): the same folder names with fewer classes and a few
synthetic images, written by :mod:`imagenet_dg.mini_suites` for tests and the demo.

:data:`SUITES` is a plain dict from name to :class:`Suite`, filled below where each suite is defined.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources

import numpy as np

from imagenet_dg.errors import ImageNetDGError

PROTOCOLS = ("fewshot", "full")
"""``fewshot``: the paper's per-domain 40/40/20 expert/guide/test split with k-shot draws (SPEC 3).
``full``: DomainBed's per-domain 80/20 split, training on the sources' 80%, selecting on their 20%."""

IMAGENET_DG = "imagenet-dg"


class SuiteError(ImageNetDGError):
    """A suite name is unknown, or a suite was asked for something it does not define."""


@dataclass(frozen=True)
class SuiteDomain:
    """One domain of a suite."""

    id: str
    """Domain id used in manifests, records and on the command line (DomainBed's folder name)."""
    display_name: str
    """Readable name, for tables."""
    folder_names: tuple[str, ...] = ()
    """Folder names this domain is found under, the DomainBed one first (empty: just the id)."""

    def folders(self) -> tuple[str, ...]:
        """Accepted folder names, the canonical one first."""
        return self.folder_names or (self.id,)


@dataclass(frozen=True)
class Scoring:
    """How a suite is scored (all figures in percent).

    Each domain's accuracy is the fraction of its images classified correctly (``average="images"``, as
    DomainBed and the paper report) or the mean of its per-class accuracies (``average="classes"``, for
    suites whose class sizes are so skewed that the image mean mostly measures the large classes). Per-class
    accuracy and the worst class are always reported beside it.
    """

    average: str = "images"
    worst_class: bool = True

    def __post_init__(self) -> None:
        if self.average not in ("images", "classes"):
            raise SuiteError(f"scoring average must be 'images' or 'classes', got {self.average!r}")

    def score(
        self,
        labels: Sequence[int],
        predictions: Sequence[int],
        domains: Sequence[str],
        class_ids: Sequence[str],
    ) -> Scores:
        """Accuracy overall, per domain and per class (percent) of ``predictions`` against ``labels``.

        ``domains`` names each image's domain; ``class_ids`` lists the classes in label order. A class with
        no image is left out of the per-class figures (and so of the worst class); no image at all scores 0.
        """
        labels_ = np.asarray(labels, dtype=np.int64)
        predictions_ = np.asarray(predictions, dtype=np.int64)
        domains_ = np.asarray(list(domains), dtype=object)
        if not len(labels_) == len(predictions_) == len(domains_):
            raise SuiteError(
                f"scoring needs one prediction and one domain per label; got {len(labels_)} labels, "
                f"{len(predictions_)} predictions and {len(domains_)} domains"
            )
        correct = labels_ == predictions_
        class_accuracy = {
            class_ids[c]: 100.0 * float(correct[labels_ == c].mean())
            for c in range(len(class_ids))
            if (labels_ == c).any()
        }
        domain_accuracy = {
            str(d): self._accuracy(correct[domains_ == d], labels_[domains_ == d]) for d in sorted(set(domains_))
        }
        return Scores(
            accuracy=self._accuracy(correct, labels_),
            domain_accuracy=domain_accuracy,
            class_accuracy=class_accuracy,
            worst_class_accuracy=min(class_accuracy.values()) if class_accuracy else 0.0,
        )

    def _accuracy(self, correct: np.ndarray, labels: np.ndarray) -> float:
        if len(correct) == 0:
            return 0.0
        if self.average == "images":
            return 100.0 * float(correct.mean())
        return 100.0 * float(np.mean([correct[labels == c].mean() for c in np.unique(labels)]))


@dataclass(frozen=True)
class Scores:
    """The figures of one evaluation, in percent."""

    accuracy: float
    domain_accuracy: Mapping[str, float]
    class_accuracy: Mapping[str, float]
    """Class id -> accuracy over its images, for the classes that have images."""
    worst_class_accuracy: float


@dataclass(frozen=True)
class Task:
    """One leave-one-domain-out task of a suite."""

    name: str
    target: str
    sources: tuple[str, ...]


@dataclass(frozen=True)
class Suite:
    """A registered benchmark suite."""

    name: str
    """Registry name, e.g. ``pacs`` or ``mini-pacs``."""
    display_name: str
    domains: tuple[SuiteDomain, ...]
    """In DomainBed's environment order (its sorted folder names): a domain's position is its env index."""
    classes: tuple[str, ...]
    """Class ids: the class folder names, sorted in code-point order; the label of a class is its position.
    Empty for ImageNet-DG, whose tasks each have their own class set (the target's wnids)."""
    folder_names: tuple[str, ...]
    """Names the suite's top folder is found under, DomainBed's first (e.g. ``PACS``, ``kfold``)."""
    layout: str = "domain/class/image"
    """How the images lie under the suite folder: ``domain/class/image`` (DomainBed's ImageFolder per domain)
    or ``imagenet-dg-releases`` (the six ImageNet releases, located by :mod:`imagenet_dg.releases`)."""
    scoring: Scoring = field(default_factory=Scoring)
    synthetic: bool = False
    """True for the miniature suites: generated pictures, never to be reported as results on real data."""
    miniature_of: str | None = None
    """For a miniature suite, the suite whose layout it copies."""
    task_list: tuple[Task, ...] = ()
    """Explicit tasks (ImageNet-DG); empty means leave-one-domain-out over :attr:`domains`."""
    source: str = ""
    """Where to get the data (official page and Hub mirrors), for messages and the README."""

    def __post_init__(self) -> None:
        if list(self.classes) != sorted(self.classes):
            raise SuiteError(f"suite {self.name}: classes must be listed in sorted order")
        ids = [d.id for d in self.domains]
        if len(set(ids)) != len(ids):
            raise SuiteError(f"suite {self.name}: a domain is listed twice")

    @property
    def domain_ids(self) -> tuple[str, ...]:
        return tuple(d.id for d in self.domains)

    def domain(self, domain_id: str) -> SuiteDomain:
        """The domain called ``domain_id``; an error listing the suite's domains otherwise."""
        for domain in self.domains:
            if domain.id == domain_id:
                return domain
        raise SuiteError(f"suite {self.name} has no domain {domain_id!r}; its domains are {', '.join(self.domain_ids)}")

    def env_index(self, domain_id: str) -> int:
        """DomainBed's environment index of a domain: its position among the suite's sorted domain folders."""
        self.domain(domain_id)
        return self.domain_ids.index(domain_id)

    def prompt_names(self) -> tuple[str, ...]:
        """Class names for prompts, in label order: the folder names with ``_`` as a space."""
        return tuple(prompt_name(c) for c in self.classes)

    def tasks(self) -> tuple[Task, ...]:
        """Every task: the explicit list, or one per target domain with all others as sources."""
        if self.task_list:
            return self.task_list
        return tuple(Task(d, d, tuple(s for s in self.domain_ids if s != d)) for d in self.domain_ids)

    def task(self, target_or_name: str) -> Task:
        """The task named (or targeting) ``target_or_name``; an error listing the tasks otherwise."""
        for task in self.tasks():
            if target_or_name in (task.name, task.target):
                return task
        names = ", ".join(t.name for t in self.tasks())
        raise SuiteError(f"suite {self.name} has no task or target {target_or_name!r}; its tasks are {names}")


def prompt_name(class_id: str) -> str:
    """The name of a class folder as a prompt says it: ``Alarm_Clock`` -> ``Alarm Clock``."""
    return class_id.replace("_", " ")


def config_name(task: str, protocol: str, *, shots: int | None = None, seed: int | None = None) -> str:
    """Name of the dataset configuration of ``task`` under ``protocol``.

    ``fewshot``: ``<task>-<shots>shot-seed<seed>`` (as ImageNet-DG names its configurations); ``full``:
    ``<task>-full-trial<seed>``, the seed being DomainBed's trial seed.
    """
    check_protocol(protocol)
    if seed is None:
        raise SuiteError(f"config_name({task!r}, {protocol!r}) needs a seed")
    if protocol == "fewshot":
        if shots is None:
            raise SuiteError(f"config_name({task!r}, 'fewshot') needs a number of shots")
        return f"{task}-{shots}shot-seed{seed}"
    return f"{task}-full-trial{seed}"


def check_protocol(protocol: str) -> str:
    """``protocol`` if it is one of :data:`PROTOCOLS`; a clear error otherwise."""
    if protocol not in PROTOCOLS:
        raise SuiteError(f"unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    return protocol


SUITES: dict[str, Suite] = {}
"""Suite name -> suite, in registration order."""


def register(suite: Suite) -> Suite:
    """Add ``suite`` to :data:`SUITES`; a name registered twice is an error."""
    if suite.name in SUITES:
        raise SuiteError(f"suite {suite.name!r} is registered twice")
    SUITES[suite.name] = suite
    return suite


def get_suite(name: str) -> Suite:
    """The suite called ``name``; an error listing the registered suites otherwise."""
    try:
        return SUITES[name]
    except KeyError:
        raise SuiteError(f"unknown suite {name!r}; expected one of {', '.join(SUITES)}") from None


@cache
def _reference_classes(file: str) -> tuple[str, ...]:
    text = resources.files("imagenet_dg").joinpath("reference", file).read_text(encoding="utf-8")
    return tuple(sorted(line.strip() for line in text.splitlines() if line.strip()))


def miniature(suite: Suite, classes: Sequence[str]) -> Suite:
    """The miniature twin of ``suite``: its folder layout with only ``classes``, marked synthetic."""
    unknown = sorted(set(classes) - set(suite.classes))
    if unknown:
        raise SuiteError(f"suite {suite.name} has no classes {unknown}")
    return replace(
        suite,
        name=f"mini-{suite.name}",
        display_name=f"{suite.display_name} (miniature, synthetic)",
        classes=tuple(sorted(classes)),
        synthetic=True,
        miniature_of=suite.name,
        source="written by imagenet_dg.mini_suites.make_mini_suite, or by 'imagenet-dg build --suite "
        f"mini-{suite.name}' without --root (synthetic pictures in the suite's folder layout)",
    )


def _imagenet_dg() -> Suite:
    from imagenet_dg.domains import DOMAINS
    from imagenet_dg.protocol import TASKS

    return Suite(
        name=IMAGENET_DG,
        display_name="ImageNet-DG",
        domains=tuple(SuiteDomain(d.id, d.release, (d.folder,)) for d in DOMAINS.values()),
        classes=(),
        folder_names=(),
        layout="imagenet-dg-releases",
        task_list=tuple(Task(t.name, t.target, t.sources) for t in TASKS.values()),
        source="ILSVRC-2012, ImageNet-A, ImageNet-R, ImageNet-Sketch and ImageNetV2 from their official pages",
    )


PACS = register(
    Suite(
        name="pacs",
        display_name="PACS",
        domains=(
            SuiteDomain("art_painting", "Art painting"),
            SuiteDomain("cartoon", "Cartoon"),
            SuiteDomain("photo", "Photo"),
            SuiteDomain("sketch", "Sketch"),
        ),
        classes=("dog", "elephant", "giraffe", "guitar", "horse", "house", "person"),
        # DomainBed renames the archive's kfold/ to PACS/; the authors' own archive unpacks to pacs_data/.
        folder_names=("PACS", "pacs", "kfold", "pacs_data", "pacs_data/pacs_data"),
        source="DomainBed's download script (PACS.zip, the authors' kfold archive), or a Hub parquet mirror "
        "such as flwrlabs/pacs",
    )
)

VLCS = register(
    Suite(
        name="vlcs",
        display_name="VLCS",
        domains=(
            SuiteDomain("Caltech101", "Caltech101"),
            SuiteDomain("LabelMe", "LabelMe"),
            SuiteDomain("SUN09", "SUN09"),
            SuiteDomain("VOC2007", "VOC2007"),
        ),
        classes=("bird", "car", "chair", "dog", "person"),
        folder_names=("VLCS", "vlcs"),
        source="DomainBed's download script (VLCS.tar.gz)",
    )
)

OFFICEHOME = register(
    Suite(
        name="officehome",
        display_name="OfficeHome",
        domains=(
            SuiteDomain("Art", "Art"),
            SuiteDomain("Clipart", "Clipart"),
            SuiteDomain("Product", "Product"),
            # The official archive spells it with a space; many copies replace it by an underscore.
            SuiteDomain("Real_World", "Real World", ("Real World", "Real_World", "RealWorld")),
        ),
        classes=_reference_classes("officehome_classes.txt"),
        folder_names=("office_home", "OfficeHomeDataset_10072016", "OfficeHome", "office-home", "officehome"),
        source="the official page (OfficeHomeDataset_10072016.zip), DomainBed's download script, or a Hub "
        "parquet mirror such as flwrlabs/office-home",
    )
)

TERRAINCOGNITA = register(
    Suite(
        name="terraincognita",
        display_name="TerraIncognita",
        domains=(
            SuiteDomain("location_100", "L100"),
            SuiteDomain("location_38", "L38"),
            SuiteDomain("location_43", "L43"),
            SuiteDomain("location_46", "L46"),
        ),
        classes=("bird", "bobcat", "cat", "coyote", "dog", "empty", "opossum", "rabbit", "raccoon", "squirrel"),
        folder_names=("terra_incognita", "TerraIncognita", "terra-incognita", "terraincognita"),
        scoring=Scoring(average="images"),
        source="DomainBed's download script (Caltech Camera Traps ECCV'18 images, sorted into locations)",
    )
)

DOMAINNET = register(
    Suite(
        name="domainnet",
        display_name="DomainNet",
        domains=(
            SuiteDomain("clipart", "Clipart"),
            SuiteDomain("infograph", "Infograph"),
            SuiteDomain("painting", "Painting"),
            SuiteDomain("quickdraw", "Quickdraw"),
            SuiteDomain("real", "Real"),
            SuiteDomain("sketch", "Sketch"),
        ),
        classes=_reference_classes("domainnet_classes.txt"),
        folder_names=("domain_net", "DomainNet", "domainnet"),
        source="the official page (one zip per domain), via DomainBed's download script, which also removes "
        "the listed duplicates",
    )
)

register(_imagenet_dg())

MINIATURE_CLASSES: Mapping[str, tuple[str, ...]] = {
    "pacs": PACS.classes,
    "vlcs": VLCS.classes,
    "officehome": ("Alarm_Clock", "Desk_Lamp", "Mug", "TV", "ToothBrush"),
    "terraincognita": ("bird", "cat", "coyote", "dog"),
    "domainnet": ("The_Eiffel_Tower", "airplane", "t-shirt", "teddy-bear", "zigzag"),
}
"""Classes of each miniature suite: real folder names, chosen to keep the awkward ones (a space-free
``TV`` that sorts before ``Table``, capitalised and hyphenated DomainNet names)."""

for _name, _classes in MINIATURE_CLASSES.items():
    register(miniature(SUITES[_name], _classes))
