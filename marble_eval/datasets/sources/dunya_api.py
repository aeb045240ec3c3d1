"""Build a Dunya corpus's metadata JSON ``{mbid: [tags] | null}`` from the Dunya API with a token.

One GET per recording: ``<api>/<tradition>/recording/<mbid>`` with ``Authorization: Token <token>``
(as pycompmusic does). Tags follow the YAML's ``options.tags`` (e.g. makamlist[].name -> makam--X).
Work is saved every ``save_every`` recordings, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterable

from marble_eval.datasets.sources.dunya import DunyaOptions, TagField, read_metadata
from marble_eval.errors import MarbleEvalError

DEFAULT_API = "https://dunya.compmusic.upf.edu/api"
TIMEOUT_SECONDS = 60


def recording_tags(recording: dict[str, Any], fields: Iterable[TagField]) -> list[str]:
    """Sorted, de-duplicated ``<prefix>--<value>`` tags of one API recording (missing values skipped)."""
    tags = set()
    for spec in fields:
        for entry in recording.get(spec.field) or []:
            value: Any = entry
            for part in spec.key.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            if isinstance(value, str) and value:
                tags.add(f"{spec.prefix}--{value}")
    return sorted(tags)


def get_recording(api: str, tradition: str, mbid: str, token: str, attempts: int = 3,
                  wait_seconds: float = 2.0) -> dict[str, Any] | None:
    """One recording's details; None when Dunya does not know it (HTTP 404)."""
    url = f"{api.rstrip('/')}/{tradition}/recording/{urllib.parse.quote(mbid)}"
    request = urllib.request.Request(url, headers={"Authorization": f"Token {token}", "Accept": "application/json"})
    for attempt in range(1, attempts + 1):
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
                data = json.loads(response.read().decode("utf-8"))
            if not isinstance(data, dict):
                raise MarbleEvalError(f"{url}: expected a JSON object, got {type(data).__name__}")
            return data
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            if exc.code in (401, 403):
                raise MarbleEvalError(f"{url}: HTTP {exc.code}: the Dunya token was refused; check --token "
                                      "(your token is on your Dunya profile page)") from None
            if exc.code < 500 or attempt == attempts:
                raise MarbleEvalError(f"{url}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            if attempt == attempts:
                reason = getattr(exc, "reason", exc)
                raise MarbleEvalError(f"{url}: request failed ({reason}); rerun to resume") from None
        time.sleep(wait_seconds * attempt)
    raise AssertionError("unreachable")


def fetch_metadata(ids: list[str], opts: DunyaOptions, token: str, output: Path, api: str = DEFAULT_API,
                   save_every: int = 100, on_progress: Callable[[int], None] | None = None,
                   wait_seconds: float = 2.0) -> dict[str, list[str] | None]:
    """Fetch tags for every id not yet in ``output`` and write ``output``; returns the full mapping."""
    if not opts.tags:
        raise MarbleEvalError(f"options.tags is empty for tradition {opts.tradition!r}; nothing to fetch")
    output = Path(output)
    metadata: dict[str, list[str] | None] = {}
    if output.is_file():
        metadata = read_metadata(output)
    todo = [mbid for mbid in ids if mbid not in metadata]
    if on_progress:
        on_progress(len(ids) - len(todo))
    for count, mbid in enumerate(todo, start=1):
        recording = get_recording(api, opts.tradition, mbid, token, wait_seconds=wait_seconds)
        metadata[mbid] = None if recording is None else recording_tags(recording, opts.tags)
        if count % save_every == 0:
            write_metadata(metadata, output)
        if on_progress:
            on_progress(1)
    write_metadata(metadata, output)
    return metadata


def write_metadata(metadata: dict[str, list[str] | None], output: Path) -> None:
    """Write the JSON atomically (a crash never leaves half a file)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.")
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        json.dump(metadata, out, indent=1, ensure_ascii=False, sort_keys=True)
        out.write("\n")
    os.replace(temporary, output)
