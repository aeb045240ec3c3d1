"""Source "vocalset": VocalSet singer or technique identification, on marble-eval's split.

MARBLE v1 built its VocalSet lists locally (torchaudio VAD, 3-s chunks, scikit-learn GroupShuffleSplit
under numpy seed 42617) and never published them (a43992899/MARBLE#16). This source follows MARBLE's
stated rules, not its random draws, so the split is marked as marble-eval's (``split_origin``):

- files: VocalSet's ``FULL/<singer>/<context>/<technique>/<file>.wav`` whose technique folder is one of
  ``options.techniques`` (MARBLE's 17 folders for singer, its 10 classes for technique), less the
  duplicates and unlisted files MARBLE deletes (``options.exclude``, by file name);
- items are recordings; their 3-s windows are the examples (``audio.window_seconds``), a last partial
  window dropped, so no recording's chunks straddle two splits;
- technique: the test split is the singers f2, f8, m3, m5 and m10; the other recordings go 60 / 40 to
  train / valid; singer: 20% of the recordings to test, then 60 / 40 of the rest to train / valid.
  Each draw is a sha1 of the recording's path, so a recording keeps its split whatever else is on disk.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field
from pydantic.dataclasses import dataclass

from marble_eval.datasets.assemble import finish, options
from marble_eval.datasets.base import Dataset, Item
from marble_eval.datasets.spec import STRICT, BenchmarkSpec

if TYPE_CHECKING:
    from marble_eval.datasets.registry import LoadContext

_WHERE = ("VocalSet 1.2 from Zenodo (zenodo.org/records/1442513, CC BY 4.0): unzip it so that --data-dir holds "
          "FULL/<singer>/<context>/<technique>/<file>.wav")
AUDIO_SOURCES = {"vocalset-singer": _WHERE, "vocalset-technique": _WHERE}
SPLIT_NOTE = ("marble-eval's split, not MARBLE's: MARBLE's VocalSet lists were never published "
              "(a43992899/MARBLE#16); this one follows MARBLE's stated rules with its own seeded draws")


@dataclass(config=STRICT)
class VocalSetOptions:
    """The ``options`` of the VocalSet YAMLs."""

    label: Literal["singer", "technique"]
    techniques: list[str]                               # technique folders whose files are items
    test_singers: list[str] = Field(default_factory=list)  # technique: these singers are the test split
    test_fraction: float = Field(default=0.0, ge=0, lt=1)   # singer: share of recordings drawn for test
    valid_fraction: float = Field(default=0.4, ge=0, lt=1)  # share of the remaining recordings for valid
    exclude: list[str] = Field(default_factory=list)        # file names left out (MARBLE deletes them)
    root: str = "FULL"


def load(spec: BenchmarkSpec, context: LoadContext) -> Dataset:
    """The recordings found under --data-dir, split by marble-eval's rule for the label."""
    opts = options(VocalSetOptions, spec)
    root = Path(context.data_dir) / opts.root if context.data_dir else None
    if root is None or not root.is_dir():
        where = f"{root} is not a folder" if root is not None else "no --data-dir given"
        return finish(spec, context, [], [SPLIT_NOTE],
                      missing_labels=f"{spec.name}: the items and their labels are the files of your VocalSet copy "
                                     f"({where}); get {_WHERE}")
    techniques, excluded = set(opts.techniques), set(opts.exclude)
    items = []
    for path in sorted(root.glob("*/*/*/*.wav")):  # FULL/<singer>/<context>/<technique>/<file>.wav, as MARBLE
        relative = path.relative_to(context.data_dir).as_posix()
        _, singer, _, technique, name = relative.split("/")
        if technique not in techniques or name in excluded or name.startswith("."):
            continue
        label = singer if opts.label == "singer" else technique
        items.append(Item(id=relative, split=split_of(relative, singer, opts), path=relative, tags=(label,)))
    return finish(spec, context, items, [SPLIT_NOTE])


def split_of(relative: str, singer: str, opts: VocalSetOptions) -> str:
    """The split of one recording: by singer for the test split where the rule names singers, else drawn."""
    if opts.test_singers:
        if singer in opts.test_singers:
            return "test"
    elif _draw(relative, "test") < opts.test_fraction:
        return "test"
    return "valid" if _draw(relative, "valid") < opts.valid_fraction else "train"


def _draw(relative: str, purpose: str) -> float:
    """A number in [0, 1) fixed by the recording's path (and what it is drawn for)."""
    digest = hashlib.sha1(f"marble-eval vocalset {purpose} {relative}".encode()).hexdigest()
    return int(digest[:15], 16) / 16 ** 15
