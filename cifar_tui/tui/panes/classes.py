"""The run view's Classes panel: a finished run's worst classes and most confused pairs.

The numbers are `cifar-tui eval`'s: the result the store keeps (`Store.eval_result`), or, on the
key, a fresh `engine.after.evaluate.evaluate_runs` of the run's best checkpoint (which records it in the
store and writes the confusion files, as the command does). Both happen in a worker thread: the UI
never waits, and torch is imported only there.
"""
from __future__ import annotations

from pathlib import Path

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

from engine.config import ConfigError
from engine.keep import checkpoint_path
from engine.record.store import Store

WORST = 10
CONFUSED = 8


def classes_renderable(result: dict, worst: list[dict]) -> Group:
    """What the panel shows of an evaluation result (`worst`: its worst classes, worst first)."""
    head = Text(f"{result.get('n', '?')} test images · {result.get('ckpt', 'best')} checkpoint\n", style="dim")
    head.append(f"top-1 {result['top1']:.2f}%", style="bold")
    head.append(f"   top-5 {result['top5']:.2f}%", style="bold")
    worst_table = Table(title="worst classes", title_justify="left", title_style="bold", box=None, padding=(0, 1),
                        expand=True, show_edge=False)
    worst_table.add_column("class", ratio=1, no_wrap=True, overflow="ellipsis")
    worst_table.add_column("acc", justify="right")
    worst_table.add_column("imgs", justify="right", style="dim")
    for r in worst:
        worst_table.add_row(r["name"], f"{r['accuracy']:.1f}%", str(r["count"]))
    confused = Table(title="most confused (true → predicted)", title_justify="left", title_style="bold", box=None,
                     padding=(0, 1), expand=True, show_edge=False)
    confused.add_column("pair", ratio=1, no_wrap=True, overflow="ellipsis")
    confused.add_column("imgs", justify="right")
    confused.add_column("share", justify="right", style="dim")
    for r in (result.get("confused") or [])[:CONFUSED]:
        confused.add_row(f"{r['true']} → {r['predicted']}", str(r["count"]), f"{r['share']:.0f}%")
    return Group(head, Text(""), worst_table, Text(""), confused)


class ClassesPanel(VerticalScroll):
    """Shown for a finished run once there is something to show: a stored result, or an evaluation
    asked for with the key. `load()` reads the store; `compute()` evaluates."""

    DEFAULT_CSS = """
    ClassesPanel { display: none; }
    ClassesPanel.-shown { display: block; }
    """

    def __init__(self, run_id: str, **kw):
        super().__init__(**kw)
        self.run_id = run_id
        self.result: dict | None = None     # the result shown
        self.worst: list[dict] = []         # its worst classes, worst first
        self.busy = False                   # a worker is reading or evaluating
        self._computing = False             # ... and it is evaluating
        self._compute_next = False          # e was pressed while the stored result was being read
        self.note = ""                      # what the panel says besides the result (progress, errors)
        self.border_title = "Classes"
        self.border_subtitle = "e evaluate"

    def compose(self):
        yield Static(id="classes-body")

    # ------------------------------------------------------------------ work
    def load(self) -> None:
        """Show the result the store keeps for this run, if any (nothing is shown otherwise)."""
        if not self.busy:
            self._start(compute=False)

    def compute(self) -> None:
        """Evaluate the run's best checkpoint now (again), as `cifar-tui eval RUN_ID` does."""
        if self._computing or self._compute_next:
            self.notify("the evaluation is still running", severity="warning")
            return
        self.note = "evaluating the best checkpoint on the test set…"
        if self.busy:  # still reading the stored result: evaluate as soon as that is done
            self.busy, self._compute_next = True, True
            self._draw()
            return
        self.busy = True
        self._draw()
        self._start(compute=True)

    def _start(self, compute: bool) -> None:
        self.busy, self._computing = True, compute
        ws = self.app.ws
        self.run_worker(lambda: self._work(Path(ws.home), Path(ws.data_root), compute), thread=True,
                        name=f"classes {self.run_id}", group="classes", exit_on_error=False)

    def _work(self, home: Path, data_root: Path, compute: bool) -> None:
        """In a worker thread: the result (stored or computed) and its worst classes, or why not."""
        result, note = None, ""
        store = Store(home)  # this thread's own connection
        try:
            if compute:
                try:
                    checkpoint_path(home / self.run_id, "best")  # said before torch loads, as by the command
                    from engine.after.evaluate import evaluate_runs

                    result = evaluate_runs(home, data_root, [self.run_id], store=store)
                except ConfigError as exc:
                    note = str(exc)
                except Exception as exc:  # noqa: BLE001 - shown in the panel, never a crash of the app
                    note = f"evaluation failed: {type(exc).__name__}: {exc}"
            else:
                result = store.eval_result(self.run_id)
            worst = []
            if result is not None:
                from engine.after.evaluate import worst_classes  # `cifar-tui eval`'s ranking (imports torch: here only)

                worst = worst_classes(result.get("per_class") or [], WORST)
        finally:
            store.close()
        try:
            self.app.call_from_thread(self._done, result, worst, note)
        except RuntimeError:  # the app is shutting down
            pass

    def _done(self, result: dict | None, worst: list[dict], note: str) -> None:
        if result is not None:
            self.result, self.worst = result, worst
        if self._compute_next:  # e was pressed during the read: evaluate now (the note says so already)
            self._compute_next = False
            self._start(compute=True)
            return
        self.busy, self._computing = False, False
        self.note = note
        self._draw()

    # ------------------------------------------------------------------ drawing
    def _draw(self) -> None:
        if not self.is_attached:
            return
        body = self.query_one("#classes-body", Static)
        parts = []
        if self.note:
            parts.append(Text(self.note, style="italic" if self.busy else "bold red"))
        if self.result is not None:
            parts.append(classes_renderable(self.result, self.worst))
        self.set_class(bool(parts), "-shown")
        if self.parent is not None:  # a narrow view shows the panel instead of the charts (app.tcss)
            self.parent.set_class(bool(parts), "-classes")
        body.update(Group(*parts))
