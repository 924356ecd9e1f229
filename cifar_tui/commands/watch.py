"""Watching from anywhere: `cifar-tui wait` (block until runs end) and `cifar-tui serve` (the TUI in
a browser). Notifications and telemetry come from the engine (engine/notify.py, engine/telemetry.py)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape

from engine.errors import ConfigError
from engine.record.status import COMPLETED, CRASHED, FAILED, STALLED, STOPPED, TERMINAL

from .common import EXIT_STOPPED, console, err_console, fail, state, supervisor, warn

EXIT_INCOMPLETE = 3  # wait: none failed, but a run was stopped (resumable, not finished)


def _settings_or_fail(stall_after: Optional[str]) -> Optional[float]:
    """Check watch.yaml and the variables up front (exit 2 naming the problem); the --stall-after value."""
    from engine.watch_config import load_watch_settings, parse_duration

    try:
        load_watch_settings(state.ws.home)
        return None if stall_after is None else parse_duration(stall_after, "--stall-after")
    except ConfigError as exc:
        fail(str(exc))


def _ended_line(row: dict) -> str:
    status, run_id = row["status"], row["run_id"]
    best = row.get("best_acc")
    best_text = "-" if best is None else f"{best:.2f}"
    if status in (FAILED, CRASHED):
        return f"[red]{status}[/] {run_id}: {escape(str(row.get('error') or 'the process ended without an end event'))}"
    colour = "green" if status == COMPLETED else "yellow"
    return f"[{colour}]{status}[/] {run_id}: best test acc {best_text}, epoch {row.get('epochs_done') or 0}/{row.get('epochs_total') or '?'}"


def wait_exit_code(statuses: list[str]) -> int:
    """0: every run completed (or was pruned by a search); 1: any failed or crashed; 3: none failed
    but some was stopped (resumable, not finished)."""
    if any(s in (FAILED, CRASHED) for s in statuses):
        return 1
    if any(s == STOPPED for s in statuses):
        return EXIT_INCOMPLETE
    return 0


def wait(run_ids: List[str] = typer.Argument(..., help="Run ids or unique prefixes."),
         as_json: bool = typer.Option(False, "--json", help="One JSON object per run as it ends."),
         stall_after: Optional[str] = typer.Option(None, "--stall-after", help="Report a live run without a step for "
                                                   "this long as stalled (90s, 10m, off; default: watch.yaml or 10m)."),
         poll: float = typer.Option(1.0, "--poll", min=0.05, help="Seconds between looks at the store.")) -> None:
    """Block until the runs end: exit 0 all completed, 1 any failed, 3 any stopped, 130 on Ctrl-C.

    Exit 0 when every run completed (or a search pruned it), 1 when any failed or crashed, 3 when
    none failed but one was stopped (resumable, not finished), 130 on Ctrl-C. A stalled run is
    reported (and notified) once; wait goes on waiting for it."""
    from engine.record.paths import check_run_id

    stall_s = _settings_or_fail(stall_after)
    for ref in run_ids:
        try:
            check_run_id(ref)
        except ConfigError as exc:
            fail(str(exc))
    sup = supervisor(gpus=[], stall_after_s=stall_s)
    ended: dict[str, str] = {}
    try:
        try:
            pending = list(dict.fromkeys(sup.resolve(ref) for ref in run_ids))
        except ConfigError as exc:
            fail(str(exc))
        while pending:
            rows = {r["run_id"]: r for r in sup.runs()}
            for notice in sup.alerts(list(rows.values())):
                if notice.run_id in pending and notice.status == STALLED:
                    err_console.print(f"[magenta]stalled[/] {notice.run_id}: {escape(notice.detail or '')}",
                                      highlight=False, soft_wrap=True)
            for run_id in list(pending):
                status = sup.status(run_id)
                if status not in TERMINAL or sup.leases.held_by(run_id):  # a lease: (re)starting right now
                    continue
                pending.remove(run_id)
                ended[run_id] = status
                row = {**(rows.get(run_id) or sup.store.run(run_id) or {"run_id": run_id}), "status": status}
                if as_json:
                    print(json.dumps({k: row.get(k) for k in ("run_id", "status", "best_acc", "best_epoch", "epochs_done",
                                                              "epochs_total", "error", "config_name")}), flush=True)
                else:
                    console.print(_ended_line(row), highlight=False, soft_wrap=True)
            if pending:
                time.sleep(poll)
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_STOPPED)
    finally:
        sup.close()
        for line in state.ws.take_warnings():
            warn(line)
    raise typer.Exit(wait_exit_code(list(ended.values())))


def serve(host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (loopback by default)."),
          port: int = typer.Option(8000, "--port", min=1, max=65535, help="Port to listen on."),
          public: bool = typer.Option(False, "--public", help="Allow a non-loopback --host; every browser must then "
                                      "present the token printed at start."),
          public_url: Optional[str] = typer.Option(None, "--public-url", help="The URL browsers reach this server by, "
                                                   "when a reverse proxy stands in front (default: the address they used)."),
          max_sessions: int = typer.Option(4, "--max-sessions", min=1, help="Browser tabs served at once (one "
                                           "cifar-tui process each); beyond, a 'server full' page."),
          idle_timeout: str = typer.Option("1h", "--idle-timeout", help="End a session after this long without "
                                           "input from its tab (90s, 30m, 2h; off: never).")) -> None:
    """The TUI in a browser (textual-serve): one cifar-tui per browser tab, on this workspace.

    From another machine: ssh -L 8000:127.0.0.1:8000 HOST, then open http://localhost:8000.

    A tab's cifar-tui ends with the tab, after --idle-timeout, and with the server; runs go on."""
    from engine.watch_config import parse_duration

    from ..serve import is_loopback

    try:
        idle_s = parse_duration(idle_timeout, "--idle-timeout")
    except ConfigError as exc:
        fail(str(exc))
    if not is_loopback(host) and not public:
        fail(f"--host {host} is not a loopback address: anyone who can reach it could drive this TUI (launch, stop, "
             f"delete runs). Use an SSH tunnel (ssh -L {port}:127.0.0.1:{port} HOST, then open http://localhost:{port}) "
             "or add --public, which requires the token printed at start")
    try:
        from ..serve import GuardedServer, app_command, new_token, start_urls
    except ImportError as exc:  # the `web` extra
        fail(f"cifar-tui serve needs textual-serve ({exc}): pip install 'cifar-tui[web]'")
    token = new_token() if public else None
    server = GuardedServer(app_command(state.ws), host=host, port=port, token=token, public_url=public_url,
                           max_sessions=max_sessions, idle_s=idle_s)
    server.urls = start_urls(host, port, token)
    # each session runs `python -m cifar_tui`: the same package as this one, wherever it was imported from
    project_root = str(Path(__file__).resolve().parents[2])
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (project_root, os.environ.get("PYTHONPATH")) if p)
    try:
        server.serve()
    except OSError as exc:
        fail(f"--host {host} --port {port}: cannot listen there: {exc.strerror or exc}")


def register(app: typer.Typer) -> None:
    app.command()(wait)
    app.command()(serve)
