"""SIGTERM stops a run as Ctrl-C does (`engine.run.interrupt_on_sigterm`): the CLI says how to resume and
exits 130, a forked worker still dies of it, and the rerun says it resumes and ends with the tables of an
uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from typoattack.engine.run import describe_resume, interrupt_on_sigterm

ROOT = Path(__file__).resolve().parents[1]
TABLES = ("per_word.csv", "per_word.md", "confusion.csv")
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX signals")


def _cli(*args: str, stall_after_first_chunk: Path | None = None) -> list[str]:
    """The `typoattack` command; with `stall_after_first_chunk`, the run writes that file once its first
    chunk is committed and then waits there (so a signal lands mid-run, at a known point)."""
    code = "from typoattack.cli import app; app()"
    if stall_after_first_chunk is not None:
        code = (
            "import time\n"
            "from pathlib import Path\n"
            "from typoattack.engine.rundir import RunFolder\n"
            "save = RunFolder.save_chunk\n"
            "def stalled(self, provenance, records):\n"
            "    save(self, provenance, records)\n"
            f"    Path({str(stall_after_first_chunk)!r}).touch()\n"
            "    time.sleep(120)\n"
            "RunFolder.save_chunk = stalled\n" + code)
    return [sys.executable, "-c", code, *args]


def _eval_args(data: Path, out: Path, cache_dir: Path) -> list[str]:
    return ["eval", "--data", str(data), "--model", "typoattack-tiny", "--pretrained", "seed:0", "--limit", "12",
            "--chunk-size", "4", "--vocab", str(ROOT / "configs/vocab/goh2021.yaml"), "--fraction", "0.07",
            "--placement", "paper8", "--templates", "simple", "--device", "cpu", "--workers", "0",
            "--cache-dir", str(cache_dir), "--out", str(out)]


def test_sigterm_says_how_to_resume_and_the_rerun_resumes(sample_dir, tmp_path, cache_dir) -> None:
    reference = subprocess.run(_cli(*_eval_args(sample_dir, tmp_path / "ref", cache_dir)), capture_output=True,
                               text=True, timeout=300)
    assert reference.returncode == 0, reference.stderr[-3000:]
    out, marker = tmp_path / "run", tmp_path / "first-chunk"
    proc = subprocess.Popen(_cli(*_eval_args(sample_dir, out, cache_dir), stall_after_first_chunk=marker),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), proc.communicate()[1][-3000:]
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr[-3000:]
    said = " ".join(stderr.split())
    assert "Interrupted." in said and "rerun the same command to resume" in said and "Traceback" not in said
    assert len(list((out / "records.parquet").rglob("*.parquet"))) == 1

    rerun = subprocess.run(_cli(*_eval_args(sample_dir, out, cache_dir)), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"Resuming {out}: 1 of 3 cells already done" in " ".join(rerun.stderr.split())  # as rich wraps it
    for name in TABLES:
        assert (out / name).read_bytes() == (tmp_path / "ref" / name).read_bytes(), name
    pd.testing.assert_frame_equal(pd.read_parquet(out / "records.parquet"),
                                  pd.read_parquet(tmp_path / "ref" / "records.parquet"))


def test_sigterm_raises_keyboard_interrupt_only_inside_the_block() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        with interrupt_on_sigterm():
            assert signal.getsignal(signal.SIGTERM) is not before
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler runs at once; never reached
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_handler_set_inside_the_block_is_kept() -> None:
    before = signal.getsignal(signal.SIGTERM)

    def other(signum, frame) -> None:
        pass

    try:
        with interrupt_on_sigterm():
            signal.signal(signal.SIGTERM, other)
        assert signal.getsignal(signal.SIGTERM) is other
    finally:
        signal.signal(signal.SIGTERM, before)


def test_a_run_in_another_thread_leaves_the_handler_alone() -> None:
    before, seen = signal.getsignal(signal.SIGTERM), []

    def body() -> None:
        with interrupt_on_sigterm():
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert seen == [before] and signal.getsignal(signal.SIGTERM) is before


def test_a_forked_worker_still_dies_of_sigterm() -> None:
    with interrupt_on_sigterm():
        pid = os.fork()
        if pid == 0:  # the worker: inherits the handler
            try:
                time.sleep(60)
            finally:
                os._exit(3)  # reached only if SIGTERM raised KeyboardInterrupt here
        time.sleep(0.2)
        os.kill(pid, signal.SIGTERM)
        _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM


def test_describe_resume() -> None:
    assert describe_resume(Path("runs/a"), 12, 40) == "Resuming runs/a: 12 of 40 cells already done"
    assert describe_resume(Path("runs/a"), 0, 1) == "Resuming runs/a: 0 of 1 cell already done"
    assert describe_resume(Path("runs/a"), 3, 3) == "Resuming runs/a: every cell (3) already done; writing the tables"
