"""CPU seconds per process group from /proc: what the benchmark's split of a run's CPU rests on."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import cpu
from pipeline.settings import Settings

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads Linux's /proc")


def _spin(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_a_process_busy_for_a_while_shows_that_much_cpu() -> None:
    meter = cpu.Meter({"me": cpu.process(os.getpid()), "tree": cpu.tree(os.getpid())})
    meter.start()
    _spin(0.3)
    spent = meter.spent()
    assert 0.25 <= spent["me"] <= 1.0
    assert spent["tree"] >= spent["me"] - 0.02


def test_a_child_that_exited_and_was_reaped_counts_in_its_parents_tree() -> None:
    meter = cpu.Meter({"tree": cpu.tree(os.getpid()), "own": cpu.process(os.getpid())})
    meter.start()
    code = "import time\nend = time.process_time() + 0.4\nwhile time.process_time() < end: pass"
    subprocess.run([sys.executable, "-c", code], check=True)
    spent = meter.spent()
    assert spent["tree"] - spent["own"] >= 0.35


def test_a_process_gone_at_the_end_is_left_out_not_guessed() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    meter = cpu.Meter({"child": cpu.process(child.pid), "absent": cpu.process(None)})
    meter.start()
    child.kill()
    child.wait()
    assert meter.spent() == {}


def test_services_of_a_users_own_cluster_are_not_measured(tmp_path: Path) -> None:
    base = Settings.from_env({"TIPLINE_STATE_DIR": str(tmp_path)})
    own = dataclasses.replace(base, kafka_external=True, database_external=True)
    assert cpu.service_probes(own) == {}
    local = cpu.service_probes(dataclasses.replace(base, kafka_external=False, database_external=False))
    assert set(local) == {"broker", "postgresql"}
    assert cpu.Meter(local).spent() == {}  # nothing runs from this empty state directory
