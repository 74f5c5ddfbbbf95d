"""The benchmark suites as data: their domains, classes, layouts, tasks, protocols and scoring, in one registry.

A suite is a set of image domains evaluated leave-one-domain-out (or on explicit tasks), described here as
data and built by the one pipeline every suite goes through (``docs/protocol.md``): a layout reader lists each
domain's images (:mod:`imagenet_dg.layouts`), a split protocol makes the configurations
(:mod:`imagenet_dg.protocols`), :mod:`imagenet_dg.build` writes them. ImageNet-DG is one suite (the six ImageNet
releases in their official layouts, the tasks a, i and r, the guide/expert halves); the standard
domain-generalisation suites PACS, VLCS, OfficeHome, TerraIncognita and DomainNet are the others, laid out on disk
the way DomainBed's download script leaves them: ``<suite folder>/<domain folder>/<class folder>/<image>``. Their
classes are indexed by their sorted folder names (plain code-point order, as torchvision's ImageFolder sorts
them); the name put in a prompt is the folder name with ``_`` read as a space.

Every standard suite has a miniature twin (``mini-pacs``, ...), registered with it: the same folder names with
fewer classes and synthetic images, written by :mod:`imagenet_dg.mini_suites` for tests and the demo.

:data:`SUITES` is a plain dict from name to :class:`Suite`, filled below where each suite is defined. Adding a
standard suite is one :func:`register` call (and its class list under ``reference/`` when it is long).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources

import numpy as np

from imagenet_dg.domains import DOMAINS
from imagenet_dg.errors import ImageNetDGError
from imagenet_dg.protocols import PROTOCOLS, SPLIT_PROTOCOLS, SplitProtocol, env_indices
from imagenet_dg.taxonomy import load_taxonomy

IMAGENET_DG = "imagenet-dg"

FOLDER_LAYOUT = "domain/class/image"
"""Layout of the standard suites: DomainBed's ImageFolder per domain (``docs/protocol.md#domainbed-folders``)."""
RELEASES_LAYOUT = "imagenet-dg-releases"
"""Layout of ImageNet-DG: the six ImageNet releases in their official layouts (``docs/protocol.md#releases``)."""

STANDARD_PROTOCOLS = ("fewshot-40-40-20", "domainbed-80-20")
"""The split protocols every standard suite offers: its ``fewshot`` and its ``full`` protocol."""


def prompt_name(class_id: str) -> str:
    """The name of a class folder as a prompt says it: ``Alarm_Clock`` -> ``Alarm Clock``."""
    return class_id.replace("_", " ")


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
    """In the order tables and records list them (the standard suites: DomainBed's sorted folder order).
    DomainBed's environment index comes from the folder names, not from this order (:meth:`env_index`)."""
    classes: tuple[str, ...]
    """Class ids: the class folder names, sorted in code-point order; the label of a class is its position.
    Empty for ImageNet-DG, whose tasks each have their own class set (the target's wnids)."""
    folder_names: tuple[str, ...]
    """Names the suite's top folder is found under, DomainBed's first (e.g. ``PACS``, ``kfold``)."""
    layout: str = FOLDER_LAYOUT
    """How the images lie on disk, the key of their reader in :data:`imagenet_dg.layouts.SUITE_LAYOUTS`:
    :data:`FOLDER_LAYOUT` or :data:`RELEASES_LAYOUT`."""
    protocols: tuple[str, ...] = STANDARD_PROTOCOLS
    """The split protocols offered (keys of :data:`imagenet_dg.protocols.SPLIT_PROTOCOLS`), at most one per
    protocol name."""
    class_name: Callable[[str], str] = prompt_name
    """The readable name of a class id, for prompts and the ``class_name`` column."""
    scoring: Scoring = field(default_factory=Scoring)
    synthetic: bool = False
    """True for the miniature suites: generated pictures, never to be reported as results on real data."""
    miniature_of: str | None = None
    """For a miniature suite, the suite whose layout it copies."""
    task_list: tuple[Task, ...] = ()
    """Explicit tasks (ImageNet-DG); empty means leave-one-domain-out over :attr:`domains`."""
    source: str = ""
    """Where to get the data (official page and Hub mirrors), for messages and the README."""
    miniature_classes: tuple[str, ...] = ()
    """The classes of the suite's miniature twin, registered with it (none: no twin)."""

    def __post_init__(self) -> None:
        if list(self.classes) != sorted(self.classes):
            raise SuiteError(f"suite {self.name}: classes must be listed in sorted order")
        ids = [d.id for d in self.domains]
        if len(set(ids)) != len(ids):
            raise SuiteError(f"suite {self.name}: a domain is listed twice")
        unknown = [p for p in self.protocols if p not in SPLIT_PROTOCOLS]
        if unknown or not self.protocols:
            raise SuiteError(f"suite {self.name}: split protocols {unknown or '(none)'}; expected some of "
                             f"{', '.join(SPLIT_PROTOCOLS)}")
        names = [SPLIT_PROTOCOLS[p].name for p in self.protocols]
        if len(set(names)) != len(names):
            raise SuiteError(f"suite {self.name}: two split protocols under one protocol name ({names})")

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
        """DomainBed's environment index of a domain laid out under its canonical folder names: its position
        among the sorted domain folders (a build uses the folder names it found, see
        :func:`imagenet_dg.protocols.env_indices`)."""
        self.domain(domain_id)
        return env_indices({d.id: d.folders()[0] for d in self.domains})[domain_id]

    def prompt_names(self) -> tuple[str, ...]:
        """Class names for prompts, in label order (for the standard suites the folder names with ``_`` as a
        space)."""
        return tuple(self.class_name(c) for c in self.classes)

    @property
    def protocol_names(self) -> tuple[str, ...]:
        """The protocol names the suite offers, in :data:`imagenet_dg.protocols.PROTOCOLS` order."""
        offered = {SPLIT_PROTOCOLS[p].name for p in self.protocols}
        return tuple(p for p in PROTOCOLS if p in offered)

    def split_protocol(self, protocol: str) -> SplitProtocol:
        """The split protocol the suite offers under the protocol name ``protocol``; an error naming the
        protocols it offers otherwise."""
        for split in self.protocols:
            if SPLIT_PROTOCOLS[split].name == protocol:
                return SPLIT_PROTOCOLS[split]
        offered = self.protocol_names
        if protocol not in PROTOCOLS:
            raise SuiteError(f"unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
        raise SuiteError(
            f"{self.display_name} has only the {' and '.join(offered)} protocol{'s' if len(offered) > 1 else ''}; "
            f"use --protocol {offered[0]}"
        )

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


SUITES: dict[str, Suite] = {}
"""Suite name -> suite, in registration order."""


def register(suite: Suite) -> Suite:
    """Add ``suite`` to :data:`SUITES`, and its miniature twin when it names the twin's classes; a name
    registered twice is an error."""
    for entry in (suite, *([miniature(suite, suite.miniature_classes)] if suite.miniature_classes else [])):
        if entry.name in SUITES:
            raise SuiteError(f"suite {entry.name!r} is registered twice")
        SUITES[entry.name] = entry
    return suite


def suite_of_manifest(manifest: Mapping) -> Suite:
    """The registered suite a built manifest names (manifests written before suites existed name none: they are
    ImageNet-DG's)."""
    return get_suite(str(manifest.get("suite", IMAGENET_DG)))


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
        miniature_classes=(),
        source="written by imagenet_dg.mini_suites.make_mini_suite, or by 'imagenet-dg build --suite "
        f"mini-{suite.name}' without --root (synthetic pictures in the suite's folder layout)",
    )


_PACS_CLASSES = ("dog", "elephant", "giraffe", "guitar", "horse", "house", "person")

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
        classes=_PACS_CLASSES,
        # DomainBed renames the archive's kfold/ to PACS/; the authors' own archive unpacks to pacs_data/.
        folder_names=("PACS", "pacs", "kfold", "pacs_data", "pacs_data/pacs_data"),
        source="DomainBed's download script (PACS.zip, the authors' kfold archive), or a Hub parquet mirror "
        "such as flwrlabs/pacs",
        miniature_classes=_PACS_CLASSES,
    )
)

_VLCS_CLASSES = ("bird", "car", "chair", "dog", "person")

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
        classes=_VLCS_CLASSES,
        folder_names=("VLCS", "vlcs"),
        source="DomainBed's download script (VLCS.tar.gz)",
        miniature_classes=_VLCS_CLASSES,
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
            # The official archive spells it with a space (its canonical folder name, first: what the
            # miniature writes); many copies replace it by an underscore.
            SuiteDomain("Real_World", "Real World", ("Real World", "Real_World", "RealWorld")),
        ),
        classes=_reference_classes("officehome_classes.txt"),
        folder_names=("office_home", "OfficeHomeDataset_10072016", "OfficeHome", "office-home", "officehome"),
        source="the official page (OfficeHomeDataset_10072016.zip), DomainBed's download script, or a Hub "
        "parquet mirror such as flwrlabs/office-home",
        # A space-free TV that sorts before Table, and an underscore read as a space.
        miniature_classes=("Alarm_Clock", "Desk_Lamp", "Mug", "TV", "ToothBrush"),
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
        miniature_classes=("bird", "cat", "coyote", "dog"),
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
        # Capitalised and hyphenated class folder names.
        miniature_classes=("The_Eiffel_Tower", "airplane", "t-shirt", "teddy-bear", "zigzag"),
    )
)

IMAGENET_DG_SOURCES = ("imagenet", "imagenet-sketch", "imagenetv2")
"""The sources of every ImageNet-DG task (``docs/protocol.md#imagenet-dg-tasks``)."""


def wordnet_name(wnid: str) -> str:
    """The readable name of an ImageNet class, for prompts (not unique: classes are keyed by wnid)."""
    return load_taxonomy().names[wnid]


IMAGENET_DG_SUITE = register(
    Suite(
        name=IMAGENET_DG,
        display_name="ImageNet-DG",
        domains=tuple(SuiteDomain(d.id, d.release, (d.folder,)) for d in DOMAINS.values()),
        classes=(),
        folder_names=(),
        layout=RELEASES_LAYOUT,
        protocols=("guide-expert-halves",),
        class_name=wordnet_name,
        task_list=(
            Task("a", "imagenet-a", IMAGENET_DG_SOURCES),
            Task("i", "imagenet-val", IMAGENET_DG_SOURCES),
            Task("r", "imagenet-r", IMAGENET_DG_SOURCES),
        ),
        source="ILSVRC-2012, ImageNet-A, ImageNet-R, ImageNet-Sketch and ImageNetV2 from their official pages",
    )
)

MINIATURE_CLASSES: Mapping[str, tuple[str, ...]] = {
    s.miniature_of: s.classes for s in SUITES.values() if s.miniature_of is not None
}
"""Suite -> the classes of its miniature twin (as registered with the suite): real folder names, chosen to keep
the awkward ones."""
