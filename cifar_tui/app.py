"""Where `cifar-tui` (no subcommand) finds the Textual app; the app lives in cifar_tui/tui/."""
from __future__ import annotations

from .tui.app import CifarTUI, run_app

__all__ = ["CifarTUI", "run_app"]
