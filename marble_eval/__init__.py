"""marble-eval: reproducible probing of music foundation models.

The Python API (what the command line calls)::

    import marble_eval
    result = marble_eval.evaluate("fixture", "fixture", seeds=1, grid="quick")
    print(result.summary["roc_auc"].mean)

``evaluate`` runs extraction and probing; ``extract`` and ``probe`` run one stage each;
``load_model`` and ``load_dataset`` load what they take by name. Heavy imports (torch) happen on
first use, so ``import marble_eval`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "evaluate": "marble_eval.pipeline",
    "extract": "marble_eval.pipeline",
    "probe": "marble_eval.pipeline",
    "evaluate_suite": "marble_eval.suites",
    "load_model": "marble_eval.pipeline",
    "load_dataset": "marble_eval.pipeline",
    "ProbeResult": "marble_eval.results.schema",
}
__all__ = [*_API, "__version__"]


def __dir__() -> list[str]:
    """The public API (not this module's own imports)."""
    return sorted(__all__)


def __getattr__(name: str) -> Any:
    """Import the API's objects on first access (PEP 562)."""
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'marble_eval' has no attribute {name!r}")
