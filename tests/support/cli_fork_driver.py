"""Run many `cifar-tui` invocations fast: `python -m tests.support.cli_fork_driver < cases.json`.

Each case runs the console script's entry point (`cifar_tui.cli:main`) in its own
forked process, with its own argv, environment, working directory and stdout/stderr
files, and reports its real exit status. Only the interpreter start and the imports
are shared (they happen once, before the forks): on a loaded two-core machine that
is the difference between ~1 s and ~30 ms a case.

Input: {"cases": [{"args": [...], "cwd": "...", "env": {...}}, ...], "timeout": s, "parallel": n,
"preload": [modules a command imports lazily, e.g. "engine.data"]}. Output: a JSON list
of {"code": int, "stdout": str, "stderr": str, "timed_out": bool} in the same order.
A case still running after `timeout` seconds is killed with its process group and
any engine it started (pids from runs/*/events.jsonl).
"""
from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

PARALLEL = 4


def _child(case: dict, out_path: str, err_path: str) -> None:
    os.setsid()
    out = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    err = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(out, 1)
    os.dup2(err, 2)
    code = 1
    try:
        os.chdir(case["cwd"])
        os.environ.clear()
        os.environ.update(case["env"])
        sys.argv = ["cifar-tui", *case["args"]]
        from cifar_tui.cli import main

        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - an escaped exception is what the tests look for
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _kill_engines(cwd: str, env: dict) -> None:
    home = Path(env.get("CIFAR_TUI_HOME") or Path(cwd) / "runs")
    for events_file in home.glob("*/events.jsonl"):
        for line in events_file.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("type") == "start" and event.get("pid"):
                try:
                    os.kill(int(event["pid"]), signal.SIGKILL)
                except (ProcessLookupError, PermissionError, ValueError):
                    pass


def run_cases(cases: list[dict], timeout: float = 120.0, parallel: int = PARALLEL, preload: tuple[str, ...] = ()) -> list[dict]:
    import importlib

    import cifar_tui.cli  # noqa: F401 - import once, before forking

    for module in preload:
        importlib.import_module(module)

    results: list[dict | None] = [None] * len(cases)
    tmp = Path(tempfile.mkdtemp(prefix="cli-fork-"))
    running: dict[int, tuple[int, float]] = {}
    queue = list(range(len(cases)))
    while queue or running:
        while queue and len(running) < parallel:
            i = queue.pop(0)
            out, err = str(tmp / f"{i}.out"), str(tmp / f"{i}.err")
            pid = os.fork()
            if pid == 0:
                _child(cases[i], out, err)
            running[pid] = (i, time.monotonic())
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            now = time.monotonic()
            for p, (i, started) in list(running.items()):
                if now - started > timeout:
                    try:
                        os.killpg(p, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    _kill_engines(cases[i]["cwd"], cases[i]["env"])
                    os.waitpid(p, 0)
                    del running[p]
                    results[i] = {"code": -9, "timed_out": True}
            time.sleep(0.005)
            continue
        i, _ = running.pop(pid)
        code = os.waitstatus_to_exitcode(status)
        results[i] = {"code": code, "timed_out": False}
    for i, r in enumerate(results):
        r["stdout"] = (tmp / f"{i}.out").read_text(errors="replace") if (tmp / f"{i}.out").exists() else ""
        r["stderr"] = (tmp / f"{i}.err").read_text(errors="replace") if (tmp / f"{i}.err").exists() else ""
        if r["timed_out"] or r["code"] != 2:
            _kill_engines(cases[i]["cwd"], cases[i]["env"])
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()
    return results  # type: ignore[return-value]


def main() -> None:
    spec = json.load(sys.stdin)
    results = run_cases(spec["cases"], timeout=spec.get("timeout", 120.0), parallel=spec.get("parallel", PARALLEL),
                        preload=tuple(spec.get("preload", ())))
    sys.stdout.write(json.dumps(results))


if __name__ == "__main__":
    main()
