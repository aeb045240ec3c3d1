"""Musical keys as a 24-class task: the class list, label parsing and the MIREX weighted score.

Classes are the 12 tonics spelled with flats (C, Db, ..., B), major first then minor: index
``tonic + 12 * minor``. The weighted score has ``mir_eval.key.weighted_score`` semantics:
1 same key; 0.5 estimated tonic a perfect fifth above the reference's in the same mode;
0.3 the relative key (minor a minor third below a major, major a minor third above a minor);
0.2 the parallel key (same tonic, other mode); else 0.
"""

from __future__ import annotations

import re

import numpy as np

from marble_eval.errors import MarbleEvalError

TONICS = ("C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B")
MODES = ("major", "minor")
KEY_CLASSES = tuple(f"{tonic} {mode}" for mode in MODES for tonic in TONICS)
_LETTER = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}
_MODE = {"major": "major", "maj": "major", "minor": "minor", "min": "minor", "m": "minor", "": "major"}
_PATTERN = re.compile(r"^\s*([a-gA-G])\s*([#b♯♭]?)\s*(?::|\s)?\s*([A-Za-z]*)\s*$")


def parse_key(label: str) -> int:
    """Class index of a key label: "C major", "F# minor", "Db minor", "C:maj", "a:min", "Bb" (major).

    Sharps are respelled as flats (F# minor -> Gb minor); a label that is not a key raises a one-line error.
    """
    match = _PATTERN.match(str(label))
    mode = _MODE.get(match.group(3).lower()) if match else None
    if match is None or mode is None:
        raise MarbleEvalError(f"key label {label!r} is not a key; write it as 'C major', 'F# minor', 'Db minor' "
                              f"or 'C:maj'")
    letter, accidental = match.group(1).lower(), match.group(2)
    tonic = (_LETTER[letter] + {"#": 1, "♯": 1, "b": -1, "♭": -1}.get(accidental, 0)) % 12
    return tonic + 12 * MODES.index(mode)


def key_relation_scores() -> np.ndarray:
    """[24, 24] weighted score of every (reference class, estimated class) pair."""
    scores = np.zeros((24, 24))
    for ref in range(24):
        ref_tonic, ref_minor = ref % 12, ref // 12
        for est in range(24):
            est_tonic, est_minor = est % 12, est // 12
            interval = (est_tonic - ref_tonic) % 12
            if ref == est:
                scores[ref, est] = 1.0
            elif est_minor == ref_minor and interval == 7:
                scores[ref, est] = 0.5
            elif est_minor != ref_minor and interval == (9 if not ref_minor else 3):
                scores[ref, est] = 0.3
            elif est_minor != ref_minor and interval == 0:
                scores[ref, est] = 0.2
    return scores


def weighted_scores(reference: np.ndarray, estimate: np.ndarray) -> np.ndarray:
    """Per-item MIREX weighted score of estimated class indices against reference class indices."""
    return key_relation_scores()[np.asarray(reference, dtype=np.int64), np.asarray(estimate, dtype=np.int64)]
