"""Longest test files first, so that no long file starts last: loaded by tests/conftest.py.

`make test` hands the xdist workers whole files (`--dist loadfile`), in collection order
(`--no-loadscope-reorder`; xdist's own order is by test count, which sent the one-test SLURM
file, the longest, last). The order comes from tests/support/file_seconds.json, each file's
seconds (setup + call + teardown) in an earlier run; a file not in it counts a second a test.
`--record-file-seconds` writes the files this run timed into the table (the others keep theirs).
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

TABLE = Path("tests/support/file_seconds.json")  # under the rootdir, as the node ids are
SECONDS_PER_UNKNOWN_TEST = 1.0
_seconds: dict[str, float] = defaultdict(float)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--record-file-seconds", action="store_true", default=False,
                     help=f"write each test file's seconds in this run to {TABLE.name} (the order of later runs)")


def known_seconds(root: Path) -> dict[str, float]:
    try:
        return json.loads((root / TABLE).read_text())
    except (OSError, ValueError):
        return {}


def order_by_cost(items: list[pytest.Item], known: dict[str, float]) -> list[pytest.Item]:
    """The items grouped by file, the costliest file first; within a file, as collected."""
    by_file: dict[str, list[pytest.Item]] = {}
    for item in items:
        by_file.setdefault(item.nodeid.split("::")[0], []).append(item)
    cost = {f: known.get(f, SECONDS_PER_UNKNOWN_TEST * len(tests)) for f, tests in by_file.items()}
    files = sorted(by_file, key=lambda f: -cost[f])  # stable: equal costs keep their collection order
    return [item for f in files for item in by_file[f]]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items[:] = order_by_cost(items, known_seconds(config.rootpath))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # In the xdist controller too: it receives each worker's reports, durations included.
    _seconds[report.nodeid.split("::")[0]] += report.duration


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    if not config.getoption("--record-file-seconds") or hasattr(config, "workerinput"):
        return  # a worker's share is counted by the controller
    root = config.rootpath
    merged = {**known_seconds(root), **{f: round(s, 1) for f, s in _seconds.items()}}
    table = {f: s for f, s in sorted(merged.items(), key=lambda kv: -kv[1]) if (root / f).exists()}
    (root / TABLE).write_text(json.dumps(table, indent=1) + "\n")
