"""bench.fast_path counts a process's CPU with its children's, those still running and those it
has reaped, once each (how Postgres' backends are counted under the postmaster)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from bench.fast_path import descendants, proc_table, tree_cpu

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

PARENT = """
import subprocess, sys
burn = "import time\\nt = time.process_time()\\nwhile time.process_time() - t < 0.5: pass\\ninput()"
child = subprocess.Popen([sys.executable, "-c", burn], stdin=subprocess.PIPE)
print(child.pid, flush=True)
sys.stdin.readline()
child.communicate(b"\\n")
print("reaped", flush=True)
sys.stdin.readline()
"""


def test_a_tree_counts_its_live_and_its_reaped_children_once() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert parent.stdin and parent.stdout
    try:
        child = int(parent.stdout.readline())
        deadline = time.monotonic() + 20
        while proc_table()[child][1] < 0.5:  # the child has burnt its half second
            assert time.monotonic() < deadline, "the child never burnt its CPU"
            time.sleep(0.05)
        table = proc_table()
        assert child in descendants(parent.pid, table)
        alive = tree_cpu(parent.pid, table)
        assert alive >= table[child][1] + table[parent.pid][1] >= 0.5

        parent.stdin.write("\n")
        parent.stdin.flush()
        assert parent.stdout.readline().strip() == "reaped"
        table = proc_table()
        assert child not in descendants(parent.pid, table)
        reaped = tree_cpu(parent.pid, table)
        assert reaped >= 0.5  # the child's time, now in the parent's cutime, still counts
        assert reaped - alive < 0.2  # and only once
    finally:
        parent.kill()
        parent.wait()
