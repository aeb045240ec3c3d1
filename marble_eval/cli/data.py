"""`marble-eval data describe|check|fetch|fetch-dunya`: inspect a dataset, verify its audio, download it
where it is published with checksums, build Dunya labels."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

from marble_eval.cli.common import add_vocabulary_and_limit_args
from marble_eval.datasets.base import SPLITS, Dataset
from marble_eval.errors import MarbleEvalError

BIG_DATASET = 200  # items; above this `data check` shows a progress bar


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="describe a dataset, check its audio, fetch its audio or Dunya labels")
    commands = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    describe = commands.add_parser("describe", help="split sizes, ordered tags and their support (no audio needed)")
    _dataset_args(describe)
    describe.add_argument("--json", action="store_true", help="print JSON")
    describe.set_defaults(run=run_describe)

    check = commands.add_parser("check", help="every item's audio present and decodable; lists what is not")
    _dataset_args(check, data_dir_required=True)
    check.add_argument("--quick", action="store_true", help="read headers only instead of decoding the audio")
    check.add_argument("--json", action="store_true", help="print the problems as JSON")
    check.set_defaults(run=run_check)

    audio = commands.add_parser("fetch", help="download a dataset's audio where URLs and checksums are published "
                                "(gs-key); md5-checked, resumable")
    audio.add_argument("dataset", help="dataset name (gs-key) or a YAML path")
    audio.add_argument("--output", type=Path, required=True, help="folder to download into (then use it as --data-dir)")
    audio.add_argument("--reference-dir", type=Path, default=None,
                       help="local split/metadata files instead of fetching (env MARBLE_EVAL_REFERENCE_DIR)")
    audio.add_argument("--base-url", default=None,
                       help="a mirror serving the same file names (default: $MARBLE_EVAL_FETCH_BASE_URL, else the "
                            "published URLs)")
    audio.add_argument("--jobs", type=int, default=4, help="parallel downloads (default 4)")
    audio.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N items of each split")
    audio.set_defaults(run=run_fetch)

    fetch = commands.add_parser("fetch-dunya", help="build a Dunya corpus's metadata JSON from the Dunya API")
    fetch.add_argument("dataset", help="makam, hindustani or carnatic (or a YAML with source: dunya)")
    fetch.add_argument("--token", default=None, help="your Dunya API token (default: $DUNYA_TOKEN)")
    fetch.add_argument("--output", type=Path, default=None, help="JSON to write (default: DATA_DIR/metadata.json)")
    fetch.add_argument("--data-dir", type=Path, default=None, help="the dataset's audio folder")
    fetch.add_argument("--reference-dir", type=Path, default=None,
                       help="local split/metadata files instead of fetching (env MARBLE_EVAL_REFERENCE_DIR)")
    fetch.add_argument("--api-url", default=None, help="Dunya API base URL (default: https://dunya.compmusic.upf.edu/api)")
    fetch.set_defaults(run=run_fetch_dunya)


def _dataset_args(parser: argparse.ArgumentParser, data_dir_required: bool = False) -> None:
    parser.add_argument("dataset", help="dataset name (marble-eval datasets) or a YAML path")
    parser.add_argument("--data-dir", type=Path, required=data_dir_required, default=None,
                        help="folder holding the dataset's audio (and its label file where it needs one)")
    parser.add_argument("--reference-dir", type=Path, default=None,
                        help="local split/metadata files instead of fetching (env MARBLE_EVAL_REFERENCE_DIR)")
    parser.add_argument("--metadata", type=Path, default=None,
                        help="label file: Dunya metadata JSON, FMA tracks.csv, or MTAT annotations_final.csv")
    add_vocabulary_and_limit_args(parser)


def _load(args: argparse.Namespace) -> Dataset:
    from marble_eval.datasets.registry import load_dataset

    if args.data_dir is not None and not args.data_dir.is_dir():
        raise MarbleEvalError(f"{args.data_dir}: --data-dir is not a directory")
    return load_dataset(args.dataset, data_dir=args.data_dir, reference_dir=args.reference_dir,
                        metadata=args.metadata, allow_unlabelled=True, vocabulary=args.vocabulary or "counted",
                        limit=args.limit)


def run_describe(args: argparse.Namespace) -> int:
    from marble_eval.datasets.summary import describe

    summary = describe(_load(args))
    if args.json:
        print(json.dumps(summary, indent=2, ensure_ascii=False))
        return 0
    console = Console()
    console = console if console.is_terminal else Console(width=120)
    sizes = " / ".join(f"{summary['splits'][split]['n_items']:,}" for split in SPLITS)
    console.print(f"[bold]{summary['name']}[/] (version {summary['version']}, {summary['task']}): "
                  f"train / valid / test = {sizes}, {len(summary['tags'])} tags ({summary['vocabulary_source']})")
    if summary["missing_audio"] is not None:
        console.print(f"missing audio: {summary['missing_audio']:,} of "
                      f"{sum(s['n_items'] for s in summary['splits'].values()):,} items")
    labelled = summary["missing_labels"] is None
    if not labelled:
        print("labels unavailable: the published vocabulary, without support counts")
    table = Table()
    table.add_column("#", justify="right")
    table.add_column("tag")
    for split in SPLITS if labelled else ():
        table.add_column(split, justify="right")
    for position, tag in enumerate(summary["tags"], start=1):
        cells = [str(summary["splits"][split]["support"][tag]) for split in SPLITS] if labelled else []
        table.add_row(str(position), tag, *cells)
    console.print(table)
    for note in summary["notes"]:
        print(f"note: {note}")
    if not labelled:
        print(f"labels: {summary['missing_labels']}")
    return 0


def run_check(args: argparse.Namespace) -> int:
    from marble_eval.datasets.summary import check_audio
    from marble_eval.progress import progress_bar

    dataset = _load(args)
    show = len(dataset.items) > BIG_DATASET and not args.json and sys.stderr.isatty()
    with progress_bar(enabled=show) as progress:
        task = progress.add_task("checking audio" if args.quick else "decoding audio", total=len(dataset.items))
        problems = check_audio(dataset, decode=not args.quick, advance=lambda: progress.advance(task))
    if args.json:
        print(json.dumps({"name": dataset.name, "n_items": len(dataset.items),
                          "problems": [{"id": p.item.id, "split": p.item.split, "path": p.path, "kind": p.kind,
                                        "reason": p.reason} for p in problems]}, indent=2))
    else:
        for problem in problems:
            print(f"{problem.kind}: {problem.path} ({problem.reason})")
        kinds = Counter(problem.kind for problem in problems)
        refused = f", {kinds['refused']:,} refused (outside the data dir)" if kinds["refused"] else ""
        print(f"{dataset.name}: {len(dataset.items) - len(problems):,} of {len(dataset.items):,} items OK, "
              f"{kinds['missing']:,} missing, {kinds['corrupt']:,} corrupt{refused}")
        if kinds["missing"]:
            _print_audio_source(args.dataset)
    return 1 if problems else 0


def _print_audio_source(name: str) -> None:
    """The "where to get it" line for a dataset whose source names one."""
    from marble_eval.datasets.fetch import audio_source
    from marble_eval.datasets.registry import load_spec

    hint = audio_source(load_spec(name))
    if hint:
        print(f"get the audio: {hint}")


def run_fetch(args: argparse.Namespace) -> int:
    from marble_eval.datasets.fetch import BASE_URL_ENV, fetch_all, fetcher
    from marble_eval.datasets.registry import LoadContext, load_dataset, load_spec
    from marble_eval.progress import progress_bar

    spec = load_spec(args.dataset)
    list_downloads = fetcher(spec)  # refuses before loading a dataset it cannot download
    dataset = load_dataset(args.dataset, reference_dir=args.reference_dir, allow_unlabelled=True, limit=args.limit)
    downloads = list_downloads(spec, LoadContext(reference_dir=args.reference_dir), dataset.items)
    base_url = args.base_url or os.environ.get(BASE_URL_ENV) or None
    with progress_bar(enabled=sys.stderr.isatty()) as progress:
        task = progress.add_task(f"{spec.name} audio", total=len(downloads))
        report = fetch_all(downloads, args.output, base_url=base_url, jobs=args.jobs,
                           on_done=lambda: progress.advance(task))
    for path, reason in report.failed:
        print(f"failed: {path}: {reason}")
    print(f"{spec.name}: {len(report.fetched):,} downloaded, {len(report.present):,} already present, "
          f"{len(report.failed):,} failed, into {args.output}"
          + ("; rerun the same command to retry the failed ones" if report.failed else ""))
    return 1 if report.failed else 0


def run_fetch_dunya(args: argparse.Namespace) -> int:
    from marble_eval.datasets.assemble import options, reference
    from marble_eval.datasets.readers import read_string_array
    from marble_eval.datasets.registry import LoadContext, load_spec
    from marble_eval.datasets.sources.dunya import DunyaOptions
    from marble_eval.datasets.sources.dunya_api import DEFAULT_API, fetch_metadata
    from marble_eval.progress import progress_bar

    spec = load_spec(args.dataset)
    if spec.source != "dunya":
        raise MarbleEvalError(f"{spec.name}: fetch-dunya works on Dunya corpora (source: dunya), not source {spec.source!r}")
    token = args.token or os.environ.get("DUNYA_TOKEN")
    if not token:
        raise MarbleEvalError("no Dunya token: pass --token TOKEN or set DUNYA_TOKEN (register at https://dunya.compmusic.upf.edu)")
    opts = options(DunyaOptions, spec)
    output = args.output or (args.data_dir / opts.metadata if args.data_dir else None)
    if output is None:
        raise MarbleEvalError("say where to write the labels: --output FILE or --data-dir DIR")
    context = LoadContext(data_dir=args.data_dir, reference_dir=args.reference_dir)
    ids = [mbid for split in SPLITS for mbid in read_string_array(reference(spec, split, context))]
    with progress_bar(enabled=sys.stderr.isatty()) as progress:
        task = progress.add_task(f"Dunya {opts.tradition} recordings", total=len(ids))
        metadata = fetch_metadata(ids, opts, token, output, api=args.api_url or DEFAULT_API,
                                  on_progress=lambda n: progress.advance(task, n))
    unknown = sum(metadata.get(mbid) is None for mbid in ids)
    print(f"wrote {output}: {len(ids) - unknown:,} of {len(ids):,} recordings tagged"
          + (f", {unknown:,} unknown to Dunya (null)" if unknown else ""))
    return 0
