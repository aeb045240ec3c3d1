"""Small file helpers used by every stage: atomic writes, temporary names, slugs, sha256.

The one place these live: a write is all-or-nothing (temporary file + rename), and the
temporaries of killed processes are recognisable by host and pid so a later run can remove them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import uuid
from pathlib import Path
from typing import Any

from marble_eval.errors import MarbleEvalError

_CHUNK = 1 << 20


def slug(text: str, limit: int = 60, default: str = "model") -> str:
    """``text`` as a file-name-safe slug (runs of other characters become "_"), its last ``limit`` characters."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text.strip("/"))[-limit:] or default


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in bounded blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_json(payload: Any) -> str:
    """Hex sha256 of the canonical (sorted-key) JSON of ``payload``."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


_HOST = re.sub(r"[^A-Za-z0-9-]+", "-", socket.gethostname()) or "host"
_TEMPORARY = re.compile(r"^\..+\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.[0-9a-f]{32}\.tmp$")


def temporary_path(path: Path) -> Path:
    """A hidden sibling of ``path`` naming this host and process (see ``remove_stale_temporaries``)."""
    return path.with_name(f".{path.name}.{_HOST}.{os.getpid()}.{uuid.uuid4().hex}.tmp")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Delete temporary files left in ``directory`` by killed processes of this host; returns them.

    Files of live processes, of other hosts (a shared file system) and of unknown names are kept.
    """
    removed = []
    for path in Path(directory).glob(".*.tmp") if Path(directory).is_dir() else []:
        match = _TEMPORARY.match(path.name)
        if match and match["host"] == _HOST and not _process_alive(int(match["pid"])):
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path)
    return removed


def write_error(path: Path, exc: OSError) -> MarbleEvalError:
    """The one-line error for a failed write of ``path``."""
    return MarbleEvalError(f"{path}: cannot write ({exc.strerror or exc}); free disk space (or fix permissions) "
                           f"and rerun the same command to resume")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename (all or nothing).

    An OSError (disk full, permissions) removes the temporary file and becomes a one-line MarbleEvalError.
    """
    temporary = temporary_path(path)
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise write_error(path, exc) from None
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, payload: Any) -> None:
    """Write ``payload`` as indented, key-sorted JSON, atomically."""
    atomic_write_bytes(path, (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())
