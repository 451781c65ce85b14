"""Runs the pipeline's processes for the demo, the benchmark and the kill test: each stage, the
projector and the simulated analysts as separate OS processes (`tipline ...` sub-commands), with their
logs in files, restartable one by one, and killable with SIGKILL for the chaos run."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from pipeline.errors import ServiceError
from pipeline.settings import Settings


@dataclass
class Member:
    """One process of the fleet: its name, its `tipline` argv, and how often it was (re)started or killed."""

    name: str
    argv: Sequence[str]
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    kills: int = 0
    log_file: IO[bytes] | None = field(default=None, repr=False)


class Fleet:
    """A set of `tipline` processes sharing one environment (settings passed through the environment)."""

    def __init__(self, settings: Settings, log_dir: Path, env: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        base = dict(os.environ if env is None else env)
        base["TIPLINE_TOPIC_SUFFIX"] = settings.topic_suffix
        base["TIPLINE_LOG_FORMAT"] = "json"
        # Generated reports name made-up demo hosts: locate them from the fixed table, never by DNS.
        base["TIPLINE_RESOLVER"] = settings.resolver
        base.setdefault("PYTHONUNBUFFERED", "1")
        self.env = base
        self.members: dict[str, Member] = {}

    def add(self, name: str, *argv: str) -> Member:
        member = Member(name=name, argv=[sys.executable, "-m", "pipeline.cli", *argv])
        self.members[name] = member
        return member

    def start(self, name: str) -> None:
        m = self.members[name]
        if m.proc is not None and m.proc.poll() is None:
            return
        if m.log_file is None:
            m.log_file = (self.log_dir / f"{name}.log").open("ab")
        m.proc = subprocess.Popen(
            list(m.argv), stdout=m.log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env
        )
        m.starts += 1

    def start_all(self) -> None:
        for name in self.members:
            self.start(name)

    def kill(self, name: str) -> None:
        """SIGKILL, no goodbye: what a crash looks like to the rest of the pipeline."""
        m = self.members[name]
        if m.proc is not None and m.proc.poll() is None:
            m.proc.send_signal(signal.SIGKILL)
            m.proc.wait(30)
            m.kills += 1

    def check(self) -> None:
        """Raise if a member died on its own (a crash the run did not cause)."""
        for m in self.members.values():
            if m.proc is not None and m.proc.poll() not in (None, 0) and m.proc.returncode != -signal.SIGKILL:
                log = self.log_dir / f"{m.name}.log"
                raise ServiceError(f"The {m.name} process exited with code {m.proc.returncode}; see {log}.")

    def stop_all(self, timeout: float = 30.0) -> None:
        for m in self.members.values():
            if m.proc is not None and m.proc.poll() is None:
                m.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for m in self.members.values():
            if m.proc is None:
                continue
            try:
                m.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                m.proc.kill()
                m.proc.wait(10)
        for m in self.members.values():
            if m.log_file is not None:
                with contextlib.suppress(OSError):
                    m.log_file.close()
                m.log_file = None

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop_all()
