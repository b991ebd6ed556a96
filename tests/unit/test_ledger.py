from __future__ import annotations

import os
from pathlib import Path

from harness import ledger


def test_records_round_trip_and_torn_tail_is_skipped(tmp_path: Path) -> None:
    lg = ledger.Ledger(tmp_path, "worker:3")
    lg.write("step_start", wf="a", step=0)
    lg.write("step_end", wf="a", step=0)
    path = next(tmp_path.glob("*.jsonl"))
    assert path.name == f"worker-3.{os.getpid()}.jsonl"
    with path.open("ab") as fh:
        fh.write(b'{"ev":"step_start","ns":1')  # a writer killed mid-record
    records = ledger.read_dir(tmp_path)
    assert [r["ev"] for r in records] == ["step_start", "step_end"]
    assert records[0]["src"] == "worker:3" and records[0]["pid"] == os.getpid()


def test_follower_reads_only_new_complete_records(tmp_path: Path) -> None:
    lg = ledger.Ledger(tmp_path, "driver")
    follower = ledger.Follower(tmp_path)
    lg.write("a")
    assert [r["ev"] for r in follower.poll()] == ["a"]
    assert follower.poll() == []
    lg.write("b")
    lg.write("c")
    assert [r["ev"] for r in follower.poll()] == ["b", "c"]


def test_each_forked_process_gets_its_own_file(tmp_path: Path) -> None:
    lg = ledger.Ledger(tmp_path, "worker:0")
    lg.write("parent")
    pid = os.fork()
    if pid == 0:
        lg.write("child")
        os._exit(0)
    os.waitpid(pid, 0)
    assert len(list(tmp_path.glob("*.jsonl"))) == 2
    assert sorted(r["ev"] for r in ledger.read_dir(tmp_path)) == ["child", "parent"]
