"""Read YAML files into validated dataclasses with one-line errors.

Validation itself is pydantic's (strict keys, typed fields); this module only turns
its multi-line reports into one line that names the file and the offending key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import ConfigDict, TypeAdapter, ValidationError

from marble_eval.errors import MarbleEvalError

T = TypeVar("T")
STRICT = ConfigDict(extra="forbid")  # every config dataclass: unknown keys are errors


def read_yaml(path: Path) -> dict[str, Any]:
    """Parse a YAML mapping, or raise a one-line error naming the file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise MarbleEvalError(f"{path}: cannot read ({exc.strerror or exc}); check the path") from None
    except UnicodeDecodeError as exc:
        raise MarbleEvalError(f"{path}: not UTF-8 text (byte {exc.start}); save the YAML as UTF-8") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise MarbleEvalError(f"{path}:{where}: {problem}; fix the YAML syntax") from None
    if not isinstance(data, dict):
        raise MarbleEvalError(f"{path}: expected a mapping of keys to values, got {type(data).__name__}")
    return data


def validate(cls: type[T], data: Any, source: str) -> T:
    """Build the (pydantic) dataclass ``cls`` from ``data``; errors become one line naming ``source``."""
    try:
        return TypeAdapter(cls).validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(_printable(part) for part in first["loc"]) or "(top level)"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise MarbleEvalError(f"{source}: {loc}: {_printable(first['msg'])}{more}") from None


def _printable(part: object) -> str:
    """A key or message as shown in a one-line error: quoted and escaped when it holds odd characters."""
    text = str(part)
    return text if text and text.isprintable() else repr(text)


def load_config(cls: type[T], path: Path) -> T:
    """Read ``path`` as YAML and validate it into ``cls``."""
    return validate(cls, read_yaml(path), str(path))


def yaml_names(folder: Path) -> list[str]:
    """Names (stems) of the YAML files in ``folder``."""
    return sorted(path.stem for path in Path(folder).glob("*.yaml"))


def named_yaml(name_or_path: str | Path, folder: Path, what: str, known_label: str) -> Path:
    """``folder/<name>.yaml`` for a name, or the path itself for a YAML path; an unknown name is a one-line
    error listing the known ones (``what``: e.g. "probe recipe"; ``known_label``: e.g. "known recipes")."""
    text = str(name_or_path)
    path = Path(text)
    if text.endswith((".yaml", ".yml")) or path.is_file():
        return path
    path = Path(folder) / f"{text}.yaml"
    if not path.is_file():
        raise MarbleEvalError(f"unknown {what} {text!r}; {known_label}: {', '.join(yaml_names(folder)) or 'none'} "
                              f"(or pass a YAML path)")
    return path

