"""precog.bench.cpu: cores used by named process trees over a window."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from precog.bench.cpu import CpuSampler, cpu_line, summarize_cpu

pytestmark = pytest.mark.unit

BUSY = "import time\nend = time.process_time() + 0.6\nwhile time.process_time() < end: pass\n"


def test_a_child_that_is_a_named_root_counts_for_itself_not_for_its_parent() -> None:
    child = subprocess.Popen([sys.executable, "-c", BUSY + "print('done', flush=True)\n"
                              "time.sleep(30)\n"], stdout=subprocess.PIPE, text=True)
    try:
        with CpuSampler({"parent": os.getpid(), "child": child.pid}, interval=0.02) as s:
            t0 = time.time()
            assert child.stdout is not None and child.stdout.readline() == "done\n"
            t1 = time.time()
            time.sleep(0.1)  # a sample after the window's end
    finally:
        child.kill()
        child.wait()
    used = s.usage(t0, t1)
    span = t1 - t0
    # the child burnt 0.6 s of CPU (its interpreter's start-up comes on top); the parent
    # only waited for its line
    assert used["child"] * span >= 0.5
    assert used["parent"] * span < 0.2
    assert used["machine"] >= used["child"] + used["parent"] - 0.05
    assert used["idle"] == pytest.approx(s.cores - used["machine"])


def test_a_child_that_is_not_named_counts_for_its_parent_even_after_it_exits() -> None:
    with CpuSampler({"parent": os.getpid()}, interval=0.02) as s:
        t0 = time.time()
        subprocess.run([sys.executable, "-c", BUSY], check=True, timeout=30)
        t1 = time.time()
    # the child's time up to its last sample stays counted once it is gone (at most one
    # interval of it is lost)
    assert s.usage(t0, t1)["parent"] * (t1 - t0) >= 0.5


def test_usage_interpolates_between_samples() -> None:
    s = CpuSampler({})
    s.times = [100.0, 101.0, 102.0]
    s.samples = [{"w": 10.0, "machine": 50.0}, {"w": 10.5, "machine": 51.0},
                 {"w": 11.5, "machine": 53.0}]
    s.cores = 2
    used = s.usage(100.5, 101.5)
    # w: 10.25 -> 11.0 over 1 s; machine: 50.5 -> 52.0
    assert used == {"w": 0.75, "machine": 1.5, "other": 0.75, "idle": 0.5}
    assert s.usage(101.0, 101.0) == {}


def test_summaries_and_the_progress_line() -> None:
    runs = [{"worker": 0.5, "kafka": 0.25, "machine": 1.0, "other": 0.25, "idle": 1.0},
            {"worker": 0.75, "kafka": 0.5, "machine": 1.5, "other": 0.25, "idle": 0.5}]
    summary = summarize_cpu(runs)
    assert summary["worker"]["median"] == 0.625
    assert summary["idle"]["runs"] == [1.0, 0.5]
    assert cpu_line(runs[0]) == "worker 0.50, kafka 0.25, other 0.25, idle 1.00 cores"
    assert cpu_line({}) == "cpu not sampled"
