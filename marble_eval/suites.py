"""Suites: several models x several datasets in one call; a failing pair is reported and the rest go on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from marble_eval.data_config import load_data_config
from marble_eval.errors import MarbleEvalError
from marble_eval.models.base import AudioEncoder
from marble_eval.pipeline import evaluate_pair
from marble_eval.protocol import resolve_protocol
from marble_eval.results.schema import ProbeResult
from marble_eval.run import Log, load_dataset

PUBLISHED_DATASETS = ("makam", "hindustani", "carnatic", "lyra", "fma", "mtat")


@dataclass(frozen=True)
class PairOutcome:
    """What happened to one (model, dataset) pair of a suite: ran, done before, or failed (and why)."""

    model: str
    dataset: str
    status: str                 # "ran" | "done" | "failed" | "missing" (a suite dataset without its data)
    detail: str = ""            # the result path, or the one-line error
    result: ProbeResult | None = None


def marble_tasks() -> tuple[str, ...]:
    """The MARBLE suite's datasets in MARBLE's table order (``--dataset marble``)."""
    from marble_eval.datasets.registry import MARBLE_TASKS

    return tuple(MARBLE_TASKS)


def dataset_names(spec: str | Sequence[str]) -> list[str]:
    """"all" -> the six published datasets; "marble" -> MARBLE's tasks; "makam,lyra,my.yaml" -> its parts
    (a list passes through)."""
    parts = [spec] if isinstance(spec, str) else list(spec)
    names: list[str] = []
    for part in parts:
        for name in str(part).split(","):
            name = name.strip()
            if name == "all":
                names += PUBLISHED_DATASETS
            elif name == "marble":
                names += marble_tasks()
            elif name:
                names.append(name)
    if not names:
        raise MarbleEvalError("--dataset: name at least one dataset (a name, a YAML path, or all)")
    return list(dict.fromkeys(names))


def model_label(model: str | AudioEncoder) -> str:
    """How a model is named in a suite's summary."""
    return model.info.model_id if isinstance(model, AudioEncoder) else str(model)


def evaluate_suite(models: Sequence[str | AudioEncoder], datasets: str | Sequence[str], *,
                   data_config: Path | str | None = None, log: Log | None = None,
                   dataset_options: dict[str, Any] | None = None, data_dir: Path | str | None = None,
                   **options: Any) -> list[PairOutcome]:
    """``evaluate`` for every (model, dataset) pair; a failing pair is reported and the others go on.

    ``data_config`` (a YAML, see ``DataConfig``) gives each dataset its data_dir, metadata and
    reference_dir; ``data_dir`` applies to a single dataset only. Pairs whose result under the same
    protocol exists are reported as done.
    """
    names = dataset_names(datasets)
    optional = set(marble_tasks()) if "marble" in ([datasets] if isinstance(datasets, str) else list(datasets)) \
        else set()
    config = load_data_config(data_config) if data_config else {}
    if data_dir and len(names) > 1:
        raise MarbleEvalError("--data-dir names one dataset's audio; for several datasets pass --data-config "
                              "data.yaml mapping each dataset to its data_dir")
    vocabulary = resolve_protocol(options.get("protocol"), vocabulary=options.get("vocabulary")).vocabulary
    outcomes = []
    for name in names:
        entry = config.get(name) or config.get(Path(name).stem)
        if name in optional and entry is None:  # --dataset marble: run what the user has, report the rest
            outcomes += [PairOutcome(model_label(model), name, "missing", "no entry in the data config; "
                                     f"`marble-eval data check {name}` says where its audio comes from")
                         for model in models]
            continue
        options_for = {**(dataset_options or {}), **(entry.options() if entry else {})}
        try:
            dataset = load_dataset(name, data_dir=entry.data_dir if entry else data_dir, vocabulary=vocabulary,
                                   **options_for)
        except MarbleEvalError as exc:
            outcomes += [PairOutcome(model_label(model), name, "failed", str(exc)) for model in models]
            continue
        for model in models:
            if log and len(models) * len(names) > 1:
                log(f"== {model_label(model)} on {dataset.name}")
            try:
                result, reused = evaluate_pair(model, dataset, {**options, "log": log})
            except MarbleEvalError as exc:
                outcomes.append(PairOutcome(model_label(model), dataset.name, "failed", str(exc)))
                if log:
                    log(f"failed: {exc}")
                continue
            outcomes.append(PairOutcome(model_label(model), dataset.name, "done" if reused else "ran",
                                        str(result.path or ""), result))
    return outcomes


def suite_lines(outcomes: Sequence[PairOutcome]) -> list[str]:
    """The closing summary of a suite: one line per pair, then the counts."""
    lines = [f"{outcome.status:<6} {outcome.model} on {outcome.dataset}: {outcome.detail}" for outcome in outcomes]
    counts = {status: sum(outcome.status == status for outcome in outcomes)
              for status in ("ran", "done", "failed", "missing")}
    missing = f", {counts['missing']} without data" if counts["missing"] else ""
    lines.append(f"suite: {len(outcomes)} pairs: {counts['ran']} ran, {counts['done']} already done, "
                 f"{counts['failed']} failed{missing}")
    return lines
