"""Foreground view of one engine process: a Rich progress display, or JSON lines.

Ctrl-C is forwarded to the engine (which is in its own session), which writes its
checkpoint and `end` event; then we exit 130.
"""
from __future__ import annotations

import json
import signal
import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from engine.events import EventTail

from .launch import Launched
from .report import fmt_acc, fmt_duration


def _epoch_row(e: dict) -> str:
    def num(key: str, fmt: str) -> str:
        v = e.get(key)
        return "-" if v is None else format(v, fmt)

    return (f"epoch {e['epoch']:>4}/{e.get('epochs', '?')}  train loss {num('train_loss', '.4f')}  acc {num('train_acc', '6.2f')}  "
            f"| test loss {num('test_loss', '.4f')}  acc {num('test_acc', '6.2f')}  | best {fmt_acc(e.get('best_acc'))} "
            f"@{e.get('best_epoch') or '-'}  lr {num('lr', '.2e')}  {fmt_duration(e.get('epoch_s'))}")


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
           from_offset: int = 0) -> tuple[int, dict | None]:
    """Stream a run until its process exits. Returns (exit code, end event or None)."""
    tail = EventTail(launched.events_path, offset=from_offset)
    end_event = None
    with _Forwarder(launched) as fwd:
        if json_mode:
            while True:
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
            end_event = _follow_rich(launched, tail, console, poll_s)
        code = launched.process.wait()
        # a DDP run stopped gracefully exits 0 (torchrun treats non-zero as failure): the event says stopped
        if code == 0 and (fwd.interrupted or (end_event or {}).get("status") == "stopped"):
            code = 130
    return code, end_event


def _follow_rich(launched: Launched, tail: EventTail, console: Console, poll_s: float) -> dict | None:
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}  acc {task.fields[acc]}  {task.fields[ips]} img/s"),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=False,
    )
    end_event, task, total_epochs = None, None, None
    with progress:
        while True:
            done = launched.process.poll() is not None
            for e in tail.poll():
                kind = e.get("type")
                if kind == "start":
                    total_epochs = (e.get("config") or {}).get("train", {}).get("epochs")
                    resumed = f" (resumed at epoch {e['resumed_from']['epoch']})" if e.get("resumed_from") else ""
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
