"""In-process stand-ins for engine processes, so that the supervisor can be unit-tested
without starting any: a FakeProcess is "alive" (its pid is the test process's own, so the
leases it holds are live) until the test finishes it."""
from __future__ import annotations

import os
from pathlib import Path

from cifar_tui.launch import Launched
from cifar_tui.supervisor import Supervisor
from cifar_tui.workspace import Workspace


class FakeProcess:
    def __init__(self) -> None:
        self.pid = os.getpid()
        self.returncode: int | None = None
        self.signals: list[int] = []

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        assert self.returncode is not None, "a fake process ends only when the test finishes it"
        return self.returncode

    def send_signal(self, sig: int) -> None:
        self.signals.append(sig)

    def finish(self, code: int = 0) -> None:
        self.returncode = code


class FakeSpawner:
    """Records what the supervisor asked to start; writes a run dir with a `start` event."""

    def __init__(self) -> None:
        self.started: list[dict] = []

    def __call__(self, ws: Workspace, item: dict, *, run_id: str, cfg, nproc, torchrun_args, env) -> Launched:
        run_dir = ws.home / run_id
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(f"name: {item['config']}\n")
        (run_dir / "events.jsonl").write_text('{"v":1,"t":0,"type":"start","run_id":"%s"}\n' % run_id)
        proc = FakeProcess()
        self.started.append({"run_id": run_id, "item": item, "env": env, "nproc": nproc, "proc": proc,
                             "resume": bool(item.get("resume_of"))})
        return Launched(run_id, run_dir, proc)  # type: ignore[arg-type]

    def proc(self, run_id: str) -> FakeProcess:
        return next(s["proc"] for s in self.started if s["run_id"] == run_id)


def make_supervisor(tmp: Path, gpus=("0", "1"), **kwargs) -> tuple[Supervisor, FakeSpawner]:
    spawner = FakeSpawner()
    ws = Workspace(home=tmp / "runs", data_root=tmp / "data")
    kwargs.setdefault("shared_queue", True)
    return Supervisor(ws, gpus=list(gpus), spawner=spawner, **kwargs), spawner

