"""GPU leases across real processes (engine/record/leases.py through the store): mutual exclusion
between two processes, a killed holder's GPU coming free by itself, and a lease handed by a
launcher to the process it spawned outliving the launcher."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

from engine.record.leases import Busy, Grant, Leases
from engine.record.status import pid_alive
from engine.record.store import Store

from tests.conftest import ROOT

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}

CONTENDER = textwrap.dedent("""
    import json, sys, time
    from engine.record.leases import Grant, Leases
    from engine.record.store import Store
    home, name, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    leases = Leases(Store(home).conn)
    held = []
    for i in range(rounds):
        while True:
            grant = leases.acquire(f"{name}-{i}", gpus=["0"], n=1, max_parallel=None)
            if isinstance(grant, Grant):
                break
            time.sleep(0.005)
        t0 = time.time()
        time.sleep(0.05)  # "training" on GPU 0
        t1 = time.time()
        leases.release(f"{name}-{i}")
        held.append((t0, t1))
    print(json.dumps(held))
""")


def test_two_processes_never_hold_one_gpu_at_once(tmp_path):
    home = tmp_path / "runs"
    Store(home).close()
    procs = [subprocess.Popen([sys.executable, "-c", CONTENDER, str(home), name, "15"], env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for name in ("a", "b")]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    spans = sorted((t0, t1, who) for (out, _), who in zip(results, "ab") for t0, t1 in json.loads(out))
    assert len(spans) == 30 and {who for *_, who in spans} == {"a", "b"}
    for (_, end, _), (start, _, _) in zip(spans, spans[1:]):
        assert start >= end, spans  # held by one process at a time
    store = Store(home)
    log = Leases(store.conn).history()
    store.close()
    assert len(log) == 30 and all(h["reason"] == "released" for h in log)


HOLDER = textwrap.dedent("""
    import sys, time
    from engine.record.leases import Leases
    from engine.record.store import Store
    leases = Leases(Store(sys.argv[1]).conn)
    print(leases.acquire("holder-run", gpus=["0", "1"], n=2, max_parallel=None), flush=True)
    time.sleep(300)
""")


def test_a_killed_holders_gpus_come_free_without_anyones_help(tmp_path):
    home = tmp_path / "runs"
    Store(home).close()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(home)], env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert "Grant(run_id='holder-run', gpus=('0', '1'))" in holder.stdout.readline()
        store = Store(home)
        leases = Leases(store.conn)
        busy = leases.acquire("mine", gpus=["0", "1"], n=1, max_parallel=None)
        assert isinstance(busy, Busy) and f"GPU 0 held by holder-run (pid {holder.pid})" in busy.reason
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        assert leases.acquire("mine", gpus=["0", "1"], n=2, max_parallel=None) == Grant("mine", ("0", "1"))
        assert [(h["run_id"], h["reason"]) for h in leases.history()][:2] == [("holder-run", "holder gone")] * 2
        store.close()
    finally:
        if holder.poll() is None:
            holder.kill()


LAUNCHER = textwrap.dedent("""
    import subprocess, sys
    from pathlib import Path
    from cifar_tui.launch import Launched
    from cifar_tui.supervisor import Supervisor
    from cifar_tui.workspace import Workspace

    def spawn(ws, item, *, run_id, cfg, nproc, torchrun_args, env):
        # stands in for the engine: its own session, like launch._spawn
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return Launched(run_id, ws.home / run_id, proc)

    ws = Workspace(home=Path(sys.argv[1]), data_root=Path(sys.argv[1]))
    sup = Supervisor(ws, gpus=["0"], shared_queue=False, spawner=spawn)
    sup.enqueue("resnet18_baseline", ["data.source=synthetic"])
    (started,) = sup.pump()
    print(started.run_id, started.launched.process.pid, flush=True)
    # the launcher quits (a TUI closed) without reaping: the engine goes on, and so does its lease
""")


def test_a_run_keeps_its_gpu_after_its_launcher_quits_until_the_engine_exits(tmp_path):
    home = tmp_path / "runs"
    out = subprocess.run([sys.executable, "-c", LAUNCHER, str(home)], env=ENV, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    run_id, engine_pid = out.stdout.split()
    engine_pid = int(engine_pid)
    try:
        assert pid_alive(engine_pid)
        store = Store(home)
        leases = Leases(store.conn)
        (lease,) = leases.held()
        assert (lease["slot"], lease["run_id"], lease["pid"]) == ("gpu:0", run_id, engine_pid)
        busy = leases.acquire("next", gpus=["0"], n=1, max_parallel=None)
        assert isinstance(busy, Busy) and f"held by {run_id} (pid {engine_pid})" in busy.reason
        store.heartbeat(run_id)  # the engine's heartbeat keeps its lease fresh
        assert leases.held()[0]["heartbeat_at"] > lease["heartbeat_at"]
        os.kill(engine_pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while pid_alive(engine_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert leases.acquire("next", gpus=["0"], n=1, max_parallel=None) == Grant("next", ("0",))
        store.close()
    finally:
        if pid_alive(engine_pid):
            os.kill(engine_pid, signal.SIGKILL)

