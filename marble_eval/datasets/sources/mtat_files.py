"""MagnaTagATune's file formats that need no dataset spec: index_mtt.tsv rows, and the rebuilt clean
train list (from jongpillee's pickled list, read without unpickling). Kept apart from the source
parser so that reference.py can rebuild files without importing a source (no import cycle)."""

from __future__ import annotations

import io
import pickletools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from marble_eval.errors import MarbleEvalError


@dataclass(frozen=True)
class Clip:
    """One data row of annotations_final.csv (or of index_mtt.tsv, without tags)."""

    clip_id: str
    path: str
    tags: tuple[str, ...] = ()


def read_index(path: Path) -> list[Clip]:
    """index_mtt.tsv: "clip_id<TAB>path" per line, no header, in annotations_final.csv order."""
    clips = []
    with open(path, encoding="utf-8") as handle:
        for line, text in enumerate(handle, start=1):
            fields = text.rstrip("\n").split("\t")
            if len(fields) != 2 or not all(fields):
                raise MarbleEvalError(f"{path}: line {line}: expected clip_id<TAB>path, found {text.strip()!r}")
            clips.append(Clip(fields[0], fields[1]))
    return clips


def build_split_file(pickled_list: bytes, index_path: Path, where: str) -> bytes:
    """train.npy bytes from jongpillee's train_list_pub.cP (a pickled list of "<dir>/<clip>.npy") and
    index_mtt.tsv: "<row>\\t<dir>/<clip>.mp3" in row order, saved with np.save.

    The pickle is read with pickletools (a disassembler: nothing is constructed or imported); any
    opcode other than containers and strings is refused. The caller checks the result's sha256.
    """
    names = _pickled_strings(pickled_list, where)
    wanted = {name[: -len(".npy")] + ".mp3" if name.endswith(".npy") else name for name in names}
    rows = [f"{row}\t{clip.path}" for row, clip in enumerate(read_index(index_path)) if clip.path in wanted]
    buffer = io.BytesIO()
    np.save(buffer, np.array(rows))
    return buffer.getvalue()


_SAFE_OPCODES = {"PROTO", "FRAME", "MARK", "EMPTY_LIST", "LIST", "APPEND", "APPENDS", "PUT", "BINPUT", "LONG_BINPUT",
                 "MEMOIZE", "GET", "BINGET", "LONG_BINGET", "STOP", "STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE",
                 "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8"}


def _pickled_strings(data: bytes, where: str) -> list[str]:
    strings = []
    try:
        for opcode, argument, _ in pickletools.genops(data):
            if opcode.name not in _SAFE_OPCODES:
                raise MarbleEvalError(f"{where}: pickle opcode {opcode.name} is not allowed in a list of names; refused")
            if "STRING" in opcode.name or "UNICODE" in opcode.name:
                strings.append(argument.decode("latin-1") if isinstance(argument, bytes) else argument)
    except ValueError as exc:
        raise MarbleEvalError(f"{where}: not a pickled list of names ({exc})") from None
    return strings
