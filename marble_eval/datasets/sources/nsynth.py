"""Source "nsynth": NSynth notes with labels from each split's official ``examples.json``.

The user's --data-dir holds the three unpacked tarballs: ``nsynth-train/``, ``nsynth-valid/`` and
``nsynth-test/``, each with ``examples.json`` (note name -> {instrument_family_str, pitch, ...}) and
``audio/<note>.wav``. No public reference file exists: without the data the split is unknown, and the
dataset says where to get it. Classes are fixed: the 11 instrument families in NSynth's index order, or
the 128 MIDI pitches 0-127 (class index = MIDI pitch; MARBLE v1's index is pitch - 1 over 128 outputs:
every NSynth pitch, 9-120, has one class in both, so the scores are the same).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field
from pydantic.dataclasses import dataclass

from marble_eval.datasets.assemble import finish, options
from marble_eval.datasets.base import SPLITS, Dataset, Item
from marble_eval.datasets.readers import read_json
from marble_eval.datasets.spec import STRICT, BenchmarkSpec
from marble_eval.errors import MarbleEvalError

if TYPE_CHECKING:
    from marble_eval.datasets.registry import LoadContext

_WHERE = ("the NSynth tarballs nsynth-{train,valid,test}.jsonwav.tar.gz (magenta.tensorflow.org/datasets/nsynth, "
          "CC BY 4.0), unpacked so that --data-dir holds nsynth-train/, nsynth-valid/ and nsynth-test/, each with "
          "examples.json and audio/")
AUDIO_SOURCES = {"nsynth-instrument": _WHERE, "nsynth-pitch": _WHERE}
FAMILIES = ("bass", "brass", "flute", "guitar", "keyboard", "mallet", "organ", "reed", "string", "synth_lead", "vocal")
PITCHES = tuple(str(pitch) for pitch in range(128))


@dataclass(config=STRICT)
class NsynthOptions:
    """The ``options`` of the NSynth YAMLs."""

    label: Literal["instrument_family", "pitch"]
    folders: dict[str, str] = Field(default_factory=lambda: {split: f"nsynth-{split}" for split in SPLITS})


def load(spec: BenchmarkSpec, context: LoadContext) -> Dataset:
    """Every note of the three splits' examples.json, labelled by instrument family or MIDI pitch."""
    opts = options(NsynthOptions, spec)
    classes = list(FAMILIES if opts.label == "instrument_family" else PITCHES)
    files = {split: Path(context.data_dir) / opts.folders[split] / "examples.json" if context.data_dir else None
             for split in SPLITS}
    absent = [str(path) for path in files.values() if path is None or not path.is_file()]
    if absent:
        where = f"{absent[0]} does not exist" if context.data_dir else "no --data-dir given"
        return finish(spec, context, [], classes=classes,
                      missing_labels=f"{spec.name}: the notes and their labels come from each split's examples.json "
                                     f"({where}); get {_WHERE}")
    items = []
    for split in SPLITS:
        path = files[split]
        assert path is not None
        for note, example in sorted(_examples(path).items()):
            label = _label(example, opts.label, path, note)
            items.append(Item(id=note, split=split, path=f"{opts.folders[split]}/audio/{note}.wav", tags=(label,)))
    return finish(spec, context, items, classes=classes)


def _examples(path: Path) -> dict[str, Any]:
    data = read_json(path)
    if not isinstance(data, dict) or not all(isinstance(example, dict) for example in data.values()):
        raise MarbleEvalError(f"{path}: expected NSynth's examples.json (an object of notes)")
    return data


def _label(example: dict[str, Any], label: str, path: Path, note: str) -> str:
    if label == "pitch":
        pitch = example.get("pitch")
        if isinstance(pitch, bool) or not isinstance(pitch, int) or not 0 <= pitch <= 127:
            raise MarbleEvalError(f"{path}: note {note!r}: pitch {pitch!r} is not a MIDI pitch 0-127")
        return str(pitch)
    family = example.get("instrument_family_str")
    if family not in FAMILIES:
        raise MarbleEvalError(f"{path}: note {note!r}: instrument_family_str {family!r} is not one of "
                              f"{', '.join(FAMILIES)}")
    return str(family)
