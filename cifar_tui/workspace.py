"""A workspace: the runs home (run directories + the store), the data root, the configs."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from engine.record.rebuild import open_store
from engine.record.store import Store


@dataclass
class Workspace:
    home: Path
    data_root: Path
    configs: Path | None = None
    # what opening the store had to say (a damaged database moved aside, an unreadable run
    # dir): one line each, for the CLI to print and the TUI to show
    warnings: list[str] = field(default_factory=list, compare=False, repr=False)

    def store(self) -> Store:
        """The store, opened whatever state it is in (engine.record.rebuild.open_store): a damaged
        database is rebuilt from the run directories, copied-in run dirs are added."""
        return open_store(self.home, self.warnings.append)

    def take_warnings(self) -> list[str]:
        out, self.warnings[:] = list(self.warnings), []
        return out
