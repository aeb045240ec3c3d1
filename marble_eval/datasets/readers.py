"""Small readers for the file formats the sources share, with one-line errors naming file and line."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from marble_eval.errors import MarbleEvalError


def read_rows(path: Path, delimiter: str, required: tuple[str, ...] = (),
              problems: list[tuple[int, str]] | None = None) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) for each data row of a delimited text file with a header line.

    Every row must have as many fields as the header, and the header must name ``required``. A UTF-8
    byte-order mark (Excel's "CSV UTF-8") is ignored. A bad row raises, or, when ``problems`` is a
    list, is appended to it as (line, what is wrong) and skipped, so that all of them can be reported.
    """
    path = Path(path)
    try:
        handle = open(path, newline="", encoding="utf-8-sig")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise MarbleEvalError(f"{path}: cannot read ({exc.strerror or exc}); check the path") from None
    with handle:
        reader = csv.reader(handle, delimiter=delimiter)
        try:
            header = next(reader)
        except StopIteration:
            raise MarbleEvalError(f"{path}: empty file; expected a header line") from None
        except UnicodeDecodeError as exc:
            raise not_utf8(path, 0, exc) from None
        except csv.Error as exc:
            raise MarbleEvalError(f"{path}: line 1: {exc}") from None
        missing = [name for name in required if name not in header]
        if missing:
            raise MarbleEvalError(f"{path}: line 1: header lacks column(s) {', '.join(missing)}; "
                                  f"expected {', '.join(required)}")
        kind = "tab-separated" if delimiter == "\t" else f"{delimiter!r}-separated"
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                return
            except UnicodeDecodeError as exc:
                raise not_utf8(path, reader.line_num, exc) from None
            except csv.Error as exc:
                problem = str(exc)
            else:
                if not fields:
                    continue  # blank line
                if len(fields) == len(header):
                    yield reader.line_num, dict(zip(header, fields))
                    continue
                problem = f"expected {len(header)} {kind} fields as in the header, found {len(fields)}; fix that row"
            if problems is None:
                raise MarbleEvalError(f"{path}: line {reader.line_num}: {problem}")
            problems.append((reader.line_num, problem))


def not_utf8(path: Path, lines_read: int, exc: UnicodeDecodeError) -> MarbleEvalError:
    """The one-line error for a text file that is not UTF-8 (text is decoded in blocks: the line is a lower bound)."""
    where = f" after line {lines_read}" if lines_read else ""
    return MarbleEvalError(f"{path}: not UTF-8 text{where} ({exc.reason}); save it as UTF-8")


def bad_rows_message(path: Path, problems: list[tuple[int, str]], shown: int = 10) -> str:
    """One line listing the first ``shown`` (line, problem) pairs of ``path`` and how many more there are."""
    problems = sorted(problems)
    if len(problems) == 1:
        line, problem = problems[0]
        return f"{path}: line {line}: {problem}"
    listed = "; ".join(f"line {line}: {problem}" for line, problem in problems[:shown])
    more = f"; and {len(problems) - shown:,} more" if len(problems) > shown else ""
    return f"{path}: {len(problems):,} bad rows: {listed}{more}; fix them and rerun"


def read_string_array(path: Path) -> list[str]:
    """A 1-D numpy array of strings (.npy), loaded without pickle."""
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise MarbleEvalError(f"{path}: not a plain numpy string array ({exc})") from None
    if array.ndim != 1 or array.dtype.kind != "U":
        raise MarbleEvalError(f"{path}: expected a 1-D array of strings, got {array.dtype} {array.shape}")
    return [str(value) for value in array]


def read_pickled_mapping(path: Path) -> dict[Any, Any]:
    """A dict saved with np.save (a pickle). Call only on a file whose sha256 was checked."""
    array = np.load(path, allow_pickle=True)
    value = array.item() if array.shape == () else None
    if not isinstance(value, dict):
        raise MarbleEvalError(f"{path}: expected a pickled dict saved with numpy, got {type(value).__name__}")
    return value


def read_json(path: Path) -> Any:
    """Parsed JSON, or a one-line error naming the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise MarbleEvalError(f"{path}: cannot read ({exc.strerror or exc}); check the path") from None
    except UnicodeDecodeError as exc:
        raise not_utf8(path, 0, exc) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise MarbleEvalError(f"{path}: line {exc.lineno}: invalid JSON ({exc.msg})") from None


def read_tag_list(path: Path) -> list[str]:
    """An ordered tag list: a .npy string array, a JSON list, or a JSON object's "train" list."""
    path = Path(path)
    if path.suffix == ".npy":
        return read_string_array(path)
    data = read_json(path)
    if isinstance(data, dict):
        data = data.get("train")
    if not isinstance(data, list) or not all(isinstance(tag, str) for tag in data):
        raise MarbleEvalError(f"{path}: expected a list of tags (or an object with a \"train\" list)")
    return data
