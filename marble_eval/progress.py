"""Rich progress bars for long work (extraction, probe grids): ETA and optional x realtime."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def progress_bar(enabled: bool = True, realtime: bool = False) -> Progress:
    """A Progress showing count, elapsed, ETA (and a `realtime` task field when asked)."""
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
    if realtime:
        columns.append(TextColumn("{task.fields[realtime]}"))
    return Progress(*columns, console=Console(file=sys.stderr), disable=not enabled, transient=False)
