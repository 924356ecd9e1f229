"""The bench's results for people: each figure against its goal, then the absolute figures
that each section contributes."""
from __future__ import annotations

from typing import Any, Iterable

from .common import Section
from .plan import goals_for


def render_bench(results: dict, console: Any, sections: Iterable[Section] = ()) -> None:
    """A table of each figure, its goal and pass/miss; then the absolute figures."""
    from rich.table import Table

    dtype = results.get("device_type") or ("cuda" if str(results.get("device", "")).startswith("cuda") else "cpu")
    table = Table(title=f"cifar-tui bench on {results.get('device_name') or results.get('device')}"
                        f"{' (quick)' if results.get('quick') else ''}", title_justify="left")
    table.add_column("figure")
    table.add_column("measured", justify="right")
    table.add_column("goal", justify="right")
    table.add_column("result", justify="center")
    for key, label, op, goal in goals_for(dtype):
        value = results.get(key)
        if value is None:
            table.add_row(label, "[dim]not measured[/]", f"{op} {goal:g}", "[dim]-[/]")
            continue
        ok = value >= goal if op == ">=" else value <= goal
        shown = f"{value:.3f} s" if op == "<=" else f"{value:.3g}x" if "_ratio_" in key else f"{value:.3f}"
        table.add_row(label, shown, f"{op} {goal:g}", "[green]pass[/]" if ok else "[red]miss[/]")
    console.print(table)

    details = Table(title="absolute figures", title_justify="left", show_header=True)
    details.add_column("what")
    details.add_column("engine", justify="right")
    details.add_column("reference", justify="right")
    for section in sections:
        for row in section.details(results):
            details.add_row(*row)
    if details.row_count:
        console.print(details)
    load, cores = results.get("loadavg_start"), results.get("cpu_count") or 1
    if load and load[0] > 0.5 * cores:
        console.print(f"[yellow]The machine was busy before the benchmark started (load average {load[0]:g} on "
                      f"{cores} cores): other processes share the CPU, and the figures are noisy.[/]")
    console.print(f"[dim]torch {results.get('torch_version')} · {results.get('cpu_count')} CPU cores · "
                  f"repeats {results.get('repeats')} (medians) · load average {results.get('loadavg_start')} -> "
                  f"{results.get('loadavg_end')} · {results.get('bench_s')} s · {results.get('date')}[/]")
