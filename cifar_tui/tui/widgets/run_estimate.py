"""The launch form's time line: how long the run (or the queued runs) will take on the chosen device,
from cifar_tui.estimate: earlier runs of the same model and input size here, else a short probe
measured in a child process (a thread waits for it: the event loop never does; the form closing
kills it), else unknown."""
from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from ...estimate import HOUR, Estimator, fmt_span, probe_enabled

LONG = HOUR  # a run longer than this is said in the warning colour


class RunEstimate(Static):
    """`show_for(cfgs, nproc)` after each change of the form; nothing while the form is invalid."""

    def __init__(self, **kw):
        super().__init__("", **kw)
        self.estimator: Estimator | None = None
        self.probe = None          # the running probe (estimate.Probe), if any
        self.probing: str | None = None  # its speed key
        self._shown: tuple | None = None  # what was asked last: (cfgs, nproc), redrawn when a probe ends
        self._tried: set[str] = set()     # speed keys probed while this form is open (once each)

    def attach(self, store, gpus: int) -> None:
        self.estimator = Estimator(store, gpus=[str(i) for i in range(gpus)]) if store is not None else None

    def clear(self) -> None:
        self._shown = None
        self.update("")

    def show_for(self, cfgs: list, nproc: int = 1) -> None:
        est = self.estimator
        if est is None or not cfgs:
            self.clear()
            return
        self._shown = (cfgs, nproc)
        result = est.estimate(cfgs[0], nproc=nproc) if len(cfgs) == 1 else est.total(cfgs, nproc=nproc)
        if not result.known:
            wanted = next((c for c in cfgs if est.needs_probe(c, nproc=nproc)
                           and est.key(c, nproc=nproc).cache_key() not in self._tried - {self.probing}), None)
            if wanted is not None:
                self._start_probe(wanted, nproc)
                key = est.key(wanted, nproc=nproc)
                self.update(Text(f"Time: measuring… (a short probe of {key.model} on {key.device}, a few seconds)",
                                 style="dim italic"))
                return
        self.update(self._line(result, len(cfgs)))

    def _line(self, result, runs: int) -> Text:
        text = Text("Time: ", style="bold")
        if not result.known:
            text.append("unknown", style="bold")
            text.append(f" ({result.note})", style="dim")
            return text
        what = f"{runs} runs, one after another" if runs > 1 else result.note
        long = result.seconds >= LONG
        text.append(f"about {fmt_span(result.seconds)} on {result.device}", style="bold yellow" if long else "bold")
        text.append(f" ({what})", style="dim")
        if long and result.device == "cpu":
            text.append(" · fewer epochs or data.train_limit make it shorter", style="yellow")
        return text

    # ------------------------------------------------------------------ the probe, off the event loop
    def _start_probe(self, cfg, nproc: int) -> None:
        key = self.estimator.key(cfg, nproc=nproc).cache_key()
        if key == self.probing or key in self._tried or not probe_enabled():
            return
        self.stop_probe()
        self.probing = key
        self._tried.add(key)
        self.probe = self.estimator.start_probe(cfg, nproc=nproc)
        self.run_worker(lambda probe=self.probe: self._wait(probe), thread=True, group="estimate-probe",
                        name="estimate probe")

    def _wait(self, probe) -> None:
        result = probe.result()  # in a thread: the child process does the work
        self.estimator.record_probe(probe, result)
        try:
            self.app.call_from_thread(self._probe_done, probe)
        except RuntimeError:  # the app is shutting down
            pass

    def _probe_done(self, probe) -> None:
        if probe is not self.probe or not self.is_attached:
            return
        self.probe = self.probing = None
        if self._shown is not None:
            self.show_for(*self._shown)

    def stop_probe(self) -> None:
        """Kill the probe running (another key is wanted, or the form closed): it may run again later."""
        if self.probe is not None:
            self.probe.kill()
            self._tried.discard(self.probing)
        self.probe = self.probing = None

    def on_unmount(self) -> None:
        self.stop_probe()
