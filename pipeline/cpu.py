"""CPU seconds used by named groups of processes over a stretch of time, read from Linux's /proc.

The benchmarks print where a run's CPU went (each stage, the broker, PostgreSQL, the load generator):
on a 2-core machine the pipeline's throughput is its CPU per report, and a figure without this split
says nothing about what to change. Elsewhere than on Linux every figure is simply absent.

A process's own time is its user + system time over all its threads; a process tree's adds its live
descendants' and what its exited children left in its ``cutime``/``cstime`` (PostgreSQL's backends).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.settings import Settings

_PROC = Path("/proc")


def _stat(pid: int) -> list[str] | None:
    try:
        # The command name (field 2) may hold spaces and parentheses: the fields after its last ")".
        return (_PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def own_seconds(pid: int) -> float | None:
    """User + system CPU seconds of one process (all its threads), or None if it is not there."""
    fields = _stat(pid)
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) / _ticks()


def children(pid: int) -> list[int]:
    """The live child processes of ``pid``."""
    found: list[int] = []
    try:
        for task in (_PROC / str(pid) / "task").iterdir():
            found += [int(c) for c in (task / "children").read_text().split()]
    except OSError:
        pass
    return found


def tree_seconds(pid: int) -> float | None:
    """CPU seconds of ``pid`` with its live descendants and its reaped children, or None if it is gone."""
    fields = _stat(pid)
    if fields is None:
        return None
    total = sum(int(f) for f in fields[11:15]) / _ticks()  # utime, stime, cutime, cstime
    for child in children(pid):
        total += tree_seconds(child) or 0.0
    return total


Probe = Callable[[], float | None]


def process(pid: int | None) -> Probe:
    return lambda: own_seconds(pid) if pid is not None else None


def tree(pid: int | None) -> Probe:
    return lambda: tree_seconds(pid) if pid is not None else None


class Meter:
    """``start()``, then ``spent()``: CPU seconds per name since the start. A name whose processes are
    gone at either end (one killed and restarted meanwhile has a new pid) is left out, not guessed."""

    def __init__(self, probes: Mapping[str, Probe]) -> None:
        self.probes = dict(probes)
        self._start: dict[str, float | None] = {}

    def start(self) -> None:
        self._start = {name: probe() for name, probe in self.probes.items()}

    def spent(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, probe in self.probes.items():
            before, after = self._start.get(name), probe()
            if before is not None and after is not None:
                out[name] = round(max(after - before, 0.0), 2)
        return out


def service_probes(settings: Settings) -> dict[str, Probe]:
    """The broker's and PostgreSQL's CPU when the project runs them here (not a cluster of the user's)."""
    from pipeline.services.common import read_pid

    probes: dict[str, Probe] = {}
    if not settings.kafka_external:
        probes["broker"] = process(read_pid(settings.kafka_dir / "broker.pid"))
    if not settings.database_external:
        try:  # its first line is the postmaster's pid; the file is readable by its owner only
            pid: int | None = int((settings.postgres_dir / "data" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pid = None
        probes["postgresql"] = tree(pid)
    return probes
