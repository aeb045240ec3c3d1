"""Which ranks of a distributed extraction are alive: heartbeat files in the cache's ``parts/`` folder.

Each rank bumps a counter in ``parts/rank-<r>.alive`` every ``HEARTBEAT_SECONDS`` while it works
and leaves ``parts/rank-<r>.json`` when it is done. A watcher judges a rank by its own clock only
(a counter that has not changed for ``DEAD_AFTER_SECONDS``; no clocks compared across machines): a
rank with neither a part nor a fresh heartbeat is dead. Nothing waits at a collective barrier for a
dead rank: global rank 0 waits for parts this way, and every rank stops when it sees a dead peer.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

HEARTBEAT_SECONDS = 20.0
DEAD_AFTER_SECONDS = 180.0


def part_path(parts: Path, rank: int) -> Path:
    return parts / f"rank-{rank}.json"


def heartbeat_path(parts: Path, rank: int) -> Path:
    return parts / f"rank-{rank}.alive"


@dataclass
class RankWatch:
    """Tells, by this process's clock, which ranks have stopped beating without leaving their part."""

    parts: Path
    world_size: int
    dead_after: float = DEAD_AFTER_SECONDS
    clock: Callable[[], float] = time.monotonic
    _seen: dict[int, tuple[str, float]] = field(default_factory=dict)  # rank -> (last beat, when it changed)
    _started: float | None = None

    def done(self) -> set[int]:
        """Ranks that left their part."""
        return {rank for rank in range(self.world_size) if part_path(self.parts, rank).exists()}

    def dead(self) -> set[int]:
        """Ranks without a part whose heartbeat has not changed for ``dead_after`` seconds (or never appeared)."""
        now = self.clock()
        if self._started is None:
            self._started = now
        dead = set()
        for rank in set(range(self.world_size)) - self.done():
            try:
                beat = heartbeat_path(self.parts, rank).read_text()
            except OSError:
                beat = ""
            last, since = self._seen.get(rank, ("", self._started))
            if beat != last:
                self._seen[rank] = (beat, now)
                continue
            if now - since >= self.dead_after:
                dead.add(rank)
        return dead

    def wait(self, pause: Callable[[float], None] = time.sleep, poll: float = 5.0) -> tuple[set[int], set[int]]:
        """Until every rank has left its part or is dead: (done, dead)."""
        while True:
            dead = self.dead()
            done = self.done()
            if len(done) + len(dead - done) >= self.world_size:
                return done, dead - done
            pause(poll)


class Heartbeat:
    """A daemon thread that bumps ``parts/rank-<r>.alive`` and, with a RankWatch, flags a dead peer."""

    def __init__(self, parts: Path, rank: int, world_size: int, interval: float = HEARTBEAT_SECONDS,
                 dead_after: float = DEAD_AFTER_SECONDS) -> None:
        self.path = heartbeat_path(parts, rank)
        self.rank = rank
        self.interval = interval
        self.watch = RankWatch(parts, world_size, dead_after)
        self.dead_peers: set[int] = set()
        self._count = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> None:
        """One heartbeat now, and a look at the peers."""
        self._count += 1
        with contextlib.suppress(OSError):  # a shared file system hiccup: the next beat retries
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(str(self._count))
        self.dead_peers = self.watch.dead() - {self.rank}

    def start(self) -> "Heartbeat":
        self.beat()
        self._thread = threading.Thread(target=self._run, name="marble-eval-heartbeat", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()
