"""Download a dataset's audio where its source publishes URLs and checksums (`marble-eval data fetch`).

Each file is checked against its md5; one whose md5 already matches is skipped, so a rerun resumes.
A download streams into a temporary sibling (``marble_eval.files.temporary_path``) and is renamed into
place only once its md5 matches: an interrupted or corrupt download never looks finished. Failures are
collected and reported, not raised, so that one dead URL does not stop the rest.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from marble_eval.datasets.base import Item, escapes
from marble_eval.errors import MarbleEvalError
from marble_eval.files import remove_stale_temporaries, temporary_path

if TYPE_CHECKING:
    from marble_eval.datasets.registry import LoadContext
    from marble_eval.datasets.spec import BenchmarkSpec

BASE_URL_ENV = "MARBLE_EVAL_FETCH_BASE_URL"  # a mirror serving the same file names (tests: a local server)
TIMEOUT_SECONDS = 60
_CHUNK = 1 << 16

# source name -> "module:function" taking (spec, context, items) and returning the items' Downloads.
FETCHERS: dict[str, str] = {
    "giantsteps": "marble_eval.datasets.sources.giantsteps:preview_downloads",
}
# source modules that name where their datasets' audio comes from (an AUDIO_SOURCES dict: name -> text)
AUDIO_SOURCE_MODULES: dict[str, str] = {
    "giantsteps": "marble_eval.datasets.sources.giantsteps",
    "mtg_jamendo": "marble_eval.datasets.sources.mtg_jamendo",
    "path_lists": "marble_eval.datasets.sources.path_lists",
    "emomusic": "marble_eval.datasets.sources.emomusic",
    "nsynth": "marble_eval.datasets.sources.nsynth",
    "vocalset": "marble_eval.datasets.sources.vocalset",
}


@dataclass(frozen=True)
class Download:
    """One file to fetch: its URL, its path under the output folder, its published md5."""

    url: str
    path: str
    md5: str


@dataclass
class FetchReport:
    """What a fetch did: paths downloaded, paths already present with the right md5, (path, reason) failures."""

    fetched: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


class FetchFailed(Exception):
    """One download failed; the message says why (HTTP status, network error, md5 mismatch)."""


def md5_file(path: Path) -> str:
    """Hex md5 of a file's bytes (a published checksum, not a security measure)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def mirrored(url: str, base_url: str | None) -> str:
    """``url`` served from ``base_url`` instead (same file name), or ``url`` itself when no base is given."""
    if not base_url:
        return url
    return f"{base_url.rstrip('/')}/{url.rsplit('/', 1)[-1]}"


def fetch_one(download: Download, output: Path, base_url: str | None = None,
              timeout: float = TIMEOUT_SECONDS) -> bool:
    """Make ``output/download.path`` hold the file with the published md5; True if downloaded, False if
    it was already there. Raises FetchFailed (the partial download removed) when it cannot."""
    if escapes(download.path):
        raise FetchFailed(f"path {download.path!r} leads out of the output folder")
    target = Path(output) / download.path
    expected = download.md5.lower()
    if target.is_file() and md5_file(target) == expected:
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(target)
    url = mirrored(download.url, base_url)
    try:
        digest = hashlib.md5(usedforsecurity=False)
        with urllib.request.urlopen(url, timeout=timeout) as response, open(temporary, "wb") as handle:
            while chunk := response.read(_CHUNK):
                digest.update(chunk)
                handle.write(chunk)
        if digest.hexdigest() != expected:
            raise FetchFailed(f"md5 mismatch (got {digest.hexdigest()}, expected {expected}) from {url}")
        os.replace(temporary, target)
    except urllib.error.HTTPError as exc:
        raise FetchFailed(f"HTTP {exc.code} {exc.reason} from {url}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise FetchFailed(f"cannot download {url} ({getattr(exc, 'reason', None) or exc})") from None
    finally:
        temporary.unlink(missing_ok=True)
    return True


def fetch_all(downloads: list[Download], output: Path, base_url: str | None = None, jobs: int = 4,
              timeout: float = TIMEOUT_SECONDS, on_done: Callable[[], None] | None = None) -> FetchReport:
    """Fetch every download into ``output`` with ``jobs`` parallel connections; failures are reported,
    not raised. Temporaries left by killed earlier runs are removed first."""
    if jobs < 1:
        raise MarbleEvalError(f"--jobs {jobs}: give 1 or more parallel downloads")
    output = Path(output)
    for folder in {(output / item.path).parent for item in downloads if not escapes(item.path)}:
        remove_stale_temporaries(folder)
    report = FetchReport()

    def run(download: Download) -> tuple[Download, bool | str]:
        try:
            return download, fetch_one(download, output, base_url, timeout)
        except FetchFailed as exc:
            return download, str(exc)
        finally:
            if on_done is not None:
                on_done()

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for download, outcome in pool.map(run, downloads):
            if isinstance(outcome, str):
                report.failed.append((download.path, outcome))
            else:
                (report.fetched if outcome else report.present).append(download.path)
    return report


def fetcher(spec: BenchmarkSpec) -> Callable[[BenchmarkSpec, LoadContext, list[Item]], list[Download]]:
    """The function listing a dataset's Downloads for some items, or a one-line refusal (no published URLs)."""
    if spec.source not in FETCHERS:
        hint = audio_source(spec)
        raise MarbleEvalError(f"{spec.name}: marble-eval cannot download its audio (no published URLs with "
                              f"checksums)" + (f"; get it here: {hint}" if hint else ""))
    module_name, function = FETCHERS[spec.source].split(":")
    return getattr(importlib.import_module(module_name), function)


def audio_source(spec: BenchmarkSpec) -> str | None:
    """Where a dataset's audio comes from, in words (None when its source module does not say)."""
    module_name = AUDIO_SOURCE_MODULES.get(spec.source)
    if module_name is None:
        return None
    return getattr(importlib.import_module(module_name), "AUDIO_SOURCES", {}).get(spec.name)
