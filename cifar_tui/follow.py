"""Foreground views of engine processes: one run as a Rich progress display (or JSON lines),
several runs side by side as prefixed epoch lines (or JSON lines).

Ctrl-C is forwarded to the engines (each in its own session), which write their
checkpoint and `end` event; then we exit 130.
"""
from __future__ import annotations

import json
import signal
import sys
import time
from typing import Callable

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from engine.record.events import EventTail
from engine.record.status import STOPPED

from .launch import Launched
from .table_rows import fmt_acc, fmt_duration
from .supervisor import ALERT_EVERY_S, Reaped, Started, Supervisor

EXIT_BAD_INPUT, EXIT_STOPPED = 2, 130
REFILL_EVERY_S = 1.0


def _epoch_row(e: dict) -> str:
    def num(key: str, fmt: str) -> str:
        v = e.get(key)
        return "-" if v is None else format(v, fmt)

    ema = f"  ema {num('ema_test_acc', '6.2f')}" if "ema_test_acc" in e else ""  # train.ema
    best_of = " (ema)" if e.get("best_model") == "ema" else ""
    return (f"epoch {e['epoch']:>4}/{e.get('epochs', '?')}  train loss {num('train_loss', '.4f')}  acc {num('train_acc', '6.2f')}  "
            f"| test loss {num('test_loss', '.4f')}  acc {num('test_acc', '6.2f')}{ema}  | best {fmt_acc(e.get('best_acc'))} "
            f"@{e.get('best_epoch') or '-'}{best_of}  lr {num('lr', '.2e')}  {fmt_duration(e.get('epoch_s'))}")


def resumed_text(resumed_from: dict | None) -> str:
    """` (resumed in epoch 2 at step 3)` / ` (resumed after epoch 2)` for a `start` event's resumed_from."""
    if not resumed_from:
        return ""
    epoch, step = resumed_from.get("epoch") or 0, resumed_from.get("step")
    return f" (resumed in epoch {epoch + 1} at step {step})" if step else f" (resumed after epoch {epoch})"


class _Forwarder:
    def __init__(self, launched: Launched):
        self.launched = launched
        self.interrupted = False
        self._previous = None

    def __enter__(self):
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):  # noqa: ARG002
        proc = self.launched.process
        if proc.poll() is None:
            # first Ctrl-C: graceful stop; second: the engine stops at once
            proc.send_signal(signal.SIGINT)
        self.interrupted = True

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self._previous)
        return False


def follow(launched: Launched, *, json_mode: bool, console: Console, poll_s: float = 0.1,
           from_offset: int = 0, tick: Callable[[], None] = lambda: None) -> tuple[int, dict | None]:
    """Stream a run until its process exits. Returns (exit code, end event or None).

    tick: called every poll (the supervisor keeps the run's GPU lease fresh)."""
    tail = EventTail(launched.events_path, offset=from_offset)
    end_event = None
    with _Forwarder(launched) as fwd:
        if json_mode:
            while True:
                tick()
                done = launched.process.poll() is not None
                for e in tail.poll():
                    sys.stdout.write(json.dumps(e) + "\n")
                    if e.get("type") == "end":
                        end_event = e
                sys.stdout.flush()
                if done:
                    break
                time.sleep(poll_s)
        else:
            end_event = _follow_rich(launched, tail, console, poll_s, tick)
        code = launched.process.wait()
        # a DDP run stopped gracefully exits 0 (torchrun treats non-zero as failure): the event says stopped
        if code == 0 and (fwd.interrupted or (end_event or {}).get("status") == STOPPED):
            code = EXIT_STOPPED
    return code, end_event


def _follow_rich(launched: Launched, tail: EventTail, console: Console, poll_s: float,
                 tick: Callable[[], None]) -> dict | None:
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}  acc {task.fields[acc]}  {task.fields[ips]} img/s"),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console,
        transient=True,  # the epoch lines and the final line stay; the last bar would only repeat them
    )
    end_event, task, total_epochs = None, None, None
    with progress:
        while True:
            tick()
            done = launched.process.poll() is not None
            for e in tail.poll():
                kind = e.get("type")
                if kind == "start":
                    total_epochs = (e.get("config") or {}).get("train", {}).get("epochs")
                    resumed = resumed_text(e.get("resumed_from"))
                    progress.console.print(f"run [bold]{launched.run_id}[/] -> {launched.run_dir}")
                    progress.console.print(
                        f"[bold]{e.get('config_name')}[/] on {e.get('device')}, data {e.get('data_source')}, "
                        f"{(e.get('params') or 0) / 1e6:.1f}M params{resumed}")
                    task = progress.add_task("starting", total=e.get("steps_per_epoch") or 1, loss="-", acc="-", ips="-")
                elif kind == "step" and task is not None:
                    progress.update(task, description=f"epoch {e['epoch']}/{total_epochs}", completed=e["step"],
                                    total=e["steps_per_epoch"], loss=f"{e['loss']:.4f}" if e.get("loss") is not None else "-",
                                    acc=f"{e['acc']:.2f}" if e.get("acc") is not None else "-", ips=f"{e.get('img_per_s', 0):.0f}")
                elif kind == "epoch":
                    progress.console.print(_epoch_row(e))
                    if task is not None and e["epoch"] < (total_epochs or 0):
                        progress.reset(task, description=f"epoch {e['epoch'] + 1}/{total_epochs}")
                elif kind == "end":
                    end_event = e
            if done:
                break
            time.sleep(poll_s)
    return end_event


def follow_many(sup: Supervisor, *, json_mode: bool, console: Console,
                finish: Callable[[Reaped, int, dict | None], int], poll_s: float = 0.2,
                refill: Callable[[], bool] | None = None, stop_signals: tuple[int, ...] = (signal.SIGINT,)) -> int:
    """Start the supervisor's own queued items as slots free up and follow them side by side.

    Prints where each run starts, why the next one waits (once per reason), each run's epochs
    prefixed with its run id or, with json_mode, every event as a JSON line. `finish(reaped,
    code, end_event) -> code` reports a finished run. Ctrl-C stops every running run gracefully
    and starts no new one; so does bad input (exit 2). Returns 0 when all completed, else the
    first non-zero code (130 on Ctrl-C). `refill()`: called after each reaping (not after Ctrl-C)
    to queue more (a study deciding its next runs); True: keep waiting although nothing of ours
    runs (runs of another launcher that the decision waits for). `stop_signals`: the signals that
    act as Ctrl-C (a SLURM worker adds scancel's SIGTERM and the time-limit warning's SIGUSR2)."""
    say = console.print if not json_mode else (lambda *a, **k: None)
    tails: dict[str, EventTail] = {}
    ends: dict[str, dict] = {}
    final, interrupted, said = 0, False, None
    waiting, next_refill = False, 0.0

    def on_sigint(signum, frame):  # noqa: ARG001
        nonlocal interrupted
        interrupted = True
        sup.interrupt(signal.SIGINT)  # a second Ctrl-C: they stop at once

    def read(run_id: str) -> None:
        for e in tails[run_id].poll():
            if json_mode:
                sys.stdout.write(json.dumps(e) + "\n")
            elif e.get("type") == "start":
                say(f"{run_id}: {e.get('config_name')} on {e.get('device')}, data {e.get('data_source')}")
            elif e.get("type") == "epoch":
                say(f"{run_id}: {_epoch_row(e)}")
            if e.get("type") == "end":
                ends[run_id] = e
        if json_mode:
            sys.stdout.flush()

    previous = {sig: signal.signal(sig, on_sigint) for sig in stop_signals}
    try:
        while True:
            for run_id in tails:
                read(run_id)
            reaped_now = False
            for reaped in sup.reap():  # first: a GPU it frees goes to the next run in this round
                reaped_now = True
                read(reaped.run_id)  # what it wrote before exiting
                tails.pop(reaped.run_id)
                code = EXIT_STOPPED if interrupted and reaped.code == 0 else reaped.code
                final = final or finish(reaped, code, ends.pop(reaped.run_id, None))
            if interrupted or final in (EXIT_BAD_INPUT, EXIT_STOPPED):
                sup.cancel_own()
                waiting = False
            else:
                if refill is not None and (reaped_now or time.monotonic() >= next_refill):
                    waiting = bool(refill())  # the store read at most once a second, and after each run
                    next_refill = time.monotonic() + REFILL_EVERY_S
                for outcome in sup.pump():
                    if isinstance(outcome, Started):
                        tails[outcome.run_id] = EventTail(outcome.launched.events_path)
                        say(f"run [bold]{outcome.run_id}[/] on {outcome.label} -> {outcome.launched.run_dir}")
                    else:
                        console.print(f"[bold red]error:[/] {escape(outcome.config)}: {escape(outcome.reason)}",
                                      highlight=False)
                        final = final or EXIT_BAD_INPUT
                if sup.blocked and sup.blocked != said:
                    say(f"waiting for a slot: {sup.blocked}")
                said = sup.blocked
            for notice in sup.alerts(every_s=ALERT_EVERY_S):  # stalled runs: said here, notified once
                if notice.run_id in tails:
                    say(f"{notice.run_id}: [magenta]{notice.status}[/] {escape(notice.detail or '')}")
            if not sup.children and not sup.own_queued() and not waiting:
                break
            time.sleep(poll_s)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return EXIT_STOPPED if interrupted and final == 0 else final
