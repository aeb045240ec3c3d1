"""`marble-eval datasets`: the known benchmark datasets with their published sizes and tasks."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console
from rich.table import Table

from marble_eval.datasets.base import SPLITS
from marble_eval.datasets.spec import BenchmarkSpec
from marble_eval.errors import MarbleEvalError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("datasets", help="list the known datasets with sizes, tasks and labels")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(run=run)


def dataset_rows() -> list[dict[str, Any]]:
    """One summary per benchmarks/*.yaml, from the YAML alone (nothing fetched or loaded)."""
    from marble_eval.datasets.registry import known_datasets, load_spec

    rows = []
    for name in known_datasets():
        try:
            spec = load_spec(name)
        except MarbleEvalError as exc:
            rows.append({"name": name, "error": str(exc)})
            continue
        rows.append({"name": spec.name, "task": spec.task, "version": spec.version, "source": spec.source,
                     "sizes": dict(spec.sizes) if spec.sizes else None, "labels": labels_summary(spec),
                     "published_vocabulary": published_list(spec), "split_origin": spec.split_origin,
                     "max_seconds": spec.audio.max_seconds, "window_seconds": spec.audio.window_seconds,
                     "partial_windows": spec.audio.partial_windows, "description": spec.description})
    return rows


def labels_summary(spec: BenchmarkSpec) -> str:
    """How the vocabulary is built, in a few words."""
    rule = spec.vocabulary
    if spec.task == "regression":
        return f"targets {', '.join(spec.targets or [])}"
    if spec.task == "key":
        return "24 keys"
    if rule.rule == "source":
        return "classes fixed by the source"
    over = {"train": "train", "training": "train+valid", "all": "all clips"}[rule.count_over]
    if rule.rule == "top_n" and rule.n:
        return f"top-{rule.n} of {over}"
    if rule.rule in ("top_n", "all"):
        return f"all tags of {over}"
    if rule.rule == "fixed":
        return f"{len(rule.tags or [])} fixed tags"
    return f"published list ({spec.files[rule.file].path.rsplit('/', 1)[-1]})"


def audio_summary(row: dict[str, Any]) -> str:
    """The audio a dataset feeds, in a few words: "30 s windows, 150 s max", "whole clip", "model's window"."""
    window = row.get("window_seconds")
    if window is None:
        parts = ["model's window"]
    elif window:
        parts = [f"{window:g} s windows" + (" (full only)" if row.get("partial_windows") == "drop" else "")]
    else:
        parts = ["whole clip"]
    if row["max_seconds"]:
        parts.append(f"{row['max_seconds']:g} s max")
    return ", ".join(parts)


def published_list(spec: BenchmarkSpec) -> str | None:
    """The reference file `--vocabulary published` takes the label set from, or None when there is none."""
    key = spec.vocabulary.published_key()
    return spec.files[key].path if key else None


def run(args: argparse.Namespace) -> int:
    rows = dataset_rows()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = Table()
    for column, justify in (("name", "left"), ("task", "left"), *((split, "right") for split in SPLITS),
                            ("labels", "left"), ("audio", "right"), ("description", "left")):
        table.add_column(column, justify=justify, overflow="fold")
    for row in rows:
        if "error" in row:
            table.add_row(row["name"], "[red]invalid[/]", "", "", "", row["error"], "", "")
            continue
        sizes = [f"{row['sizes'][split]:,}" if row["sizes"] else "?" for split in SPLITS]
        audio = audio_summary(row)
        name = row["name"] + (" ‡" if row["split_origin"] == "marble-eval" else "")
        table.add_row(name, row["task"], *sizes, row["labels"], audio, row["description"])
    console = Console()
    (console if console.is_terminal else Console(width=160)).print(table)
    if any(row.get("sizes") is None and "error" not in row for row in rows):
        print("?: no published sizes in the YAML; `marble-eval data describe NAME` counts them")
    if any(row.get("split_origin") == "marble-eval" for row in rows):
        print("‡: marble-eval's split, built by the upstream's stated rules (its own lists were never published)")
    return 0
