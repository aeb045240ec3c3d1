"""Progress when the output goes to a file (nohup, SLURM): plain lines at a sane interval (issue #21 item 9)."""

from __future__ import annotations

import io

from rich.progress import Progress

from marble_eval.progress import PlainProgress, progress_bar


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def elapsed_seconds(line: str) -> int:
    hours, minutes, seconds = line.split("elapsed ")[1].split(",")[0].split(":")
    return 3600 * int(hours) + 60 * int(minutes) + int(seconds)


def test_a_file_gets_plain_lines_every_30_s_and_at_5_percent_steps() -> None:
    out, clock = io.StringIO(), FakeClock()
    bar = progress_bar(True, realtime=True, stream=out, clock=clock)
    assert isinstance(bar, PlainProgress)
    with bar:
        task = bar.add_task("extract mtg", total=1000, realtime="")
        for _ in range(600):   # 1 item a second: 10 minutes, 60% of the work
            clock.now += 1.0
            bar.update(task, advance=1, realtime="3.0x realtime")
        slow = len(out.getvalue().splitlines())
        for _ in range(400):   # then 128 items a second: 5% steps every 0.4 s, but lines 5 s apart at least
            clock.now += 1 / 128  # exact in binary
            bar.update(task, advance=1)
    lines = out.getvalue().splitlines()
    assert lines[0] == "extract mtg: 0/1000 (0%), elapsed 0:00:00"
    assert lines[1] == "extract mtg: 30/1000 (3%), elapsed 0:00:30, ETA 0:16:10, 3.0x realtime"
    assert lines[-1] == "extract mtg: 1000/1000 (100%), elapsed 0:10:03, 3.0x realtime, done"
    gaps = [b - a for a, b in zip(map(elapsed_seconds, lines[:slow]), map(elapsed_seconds, lines[1:slow]))]
    assert gaps and all(5 <= gap <= 30 for gap in gaps)  # never silent for more than 30 s, never a flood
    assert {f"({p}%)" for p in range(5, 60, 5)} <= {line.split(" ")[3].rstrip(",") for line in lines}
    assert len(lines) == slow + 1  # 3 s of fast work: no 5% line (5 s apart at least), one closing line


def test_5_percent_steps_print_when_30_s_have_not_passed() -> None:
    out, clock = io.StringIO(), FakeClock()
    with PlainProgress(out, clock=clock) as bar:
        task = bar.add_task("probes", total=100)
        for _ in range(100):   # 10 s per item: each 5% step is 50 s; lines every 30 s and at every step
            clock.now += 10.0
            bar.advance(task)
    lines = out.getvalue().splitlines()
    percents = [line.split("(")[1].split("%")[0] for line in lines]
    assert all(f"{p}" in percents for p in range(5, 100, 5))
    assert lines[-1].endswith("done") and lines[-1].startswith("probes: 100/100")


def test_a_terminal_gets_the_rich_bar_and_disabled_means_silent() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert isinstance(progress_bar(True, stream=Terminal()), Progress)
    out = io.StringIO()
    with progress_bar(False, stream=out) as bar:
        bar.update(bar.add_task("x", total=3), advance=3)
    assert out.getvalue() == ""


def test_an_unfinished_task_prints_a_closing_line_on_stop() -> None:
    out, clock = io.StringIO(), FakeClock()
    with PlainProgress(out, clock=clock) as bar:
        task = bar.add_task("decode", total=10)
        clock.now += 2
        bar.advance(task, 3)
    assert out.getvalue().splitlines()[-1] == "decode: 3/10 (30%), elapsed 0:00:02, ETA 0:00:04, done"


def test_a_cache_hit_prints_one_sensible_line_not_0_of_0(tiny_mert_dirs, small_fixture_yaml, tmp_path, capsys) -> None:
    from marble_eval.cli import main

    argv = ["extract", "--model", str(tiny_mert_dirs["safetensors"]), "--dataset", str(small_fixture_yaml),
            "--data-dir", str(tmp_path / "audio"), "--cache-dir", str(tmp_path / "cache")]
    assert main(argv) == 0
    first = capsys.readouterr()
    assert "extract tiny-fixture: 0/" in first.err and first.err.strip().splitlines()[-1].endswith("done")
    assert main(argv) == 0
    again = capsys.readouterr()
    assert "0/0" not in again.err + again.out and "realtime" not in again.out
    assert any(line.startswith("time: ") and line.endswith("every item was already cached")
               for line in again.out.splitlines())
