"""`make test` starts the longest test files first (tests/support/file_order.py), so no long file
starts when the others are done; a run with --record-file-seconds keeps the table true."""
from __future__ import annotations

import json
import os

from tests.conftest import ROOT

TABLE = "tests/support/file_seconds.json"
RECORDS = """
import time
def test_{n}():
    time.sleep({sleep})
    with open("order.log", "a") as log:
        log.write("{name}\\n")
"""


def inner_files(pytester, sleeps: dict[str, list[float]]) -> None:
    for name, per_test in sleeps.items():
        pytester.makepyfile(**{name: "\n".join(RECORDS.format(n=i, sleep=s, name=name) for i, s in enumerate(per_test))})
    pytester._monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))


def run_on_one_worker(pytester, *extra: str):
    return pytester.runpytest_subprocess("-p", "tests.support.file_order", "-p", "no:cacheprovider", "-q",
                                         "-n", "1", "--dist", "loadfile", "--no-loadscope-reorder", *extra,
                                         timeout=120)


def test_the_costliest_file_in_the_table_runs_first_and_unknown_files_count_a_second_a_test(pytester):
    inner_files(pytester, {"test_a_many": [0, 0, 0], "test_b_long": [0], "test_c_two": [0, 0]})
    (pytester.path / "tests" / "support").mkdir(parents=True)
    (pytester.path / TABLE).write_text(json.dumps({"test_b_long.py": 100.0}))
    run_on_one_worker(pytester).assert_outcomes(passed=6)
    ran = (pytester.path / "order.log").read_text().split()
    # Collection order would be a, a, a, b, c, c; xdist's own order by test count the same.
    assert ran == ["test_b_long"] + ["test_a_many"] * 3 + ["test_c_two"] * 2


def test_record_file_seconds_writes_what_each_file_took_and_keeps_the_other_files_entries(pytester):
    inner_files(pytester, {"test_fast": [0, 0], "test_slow": [0.4]})
    (pytester.path / "tests" / "support").mkdir(parents=True)
    (pytester.path / "test_elsewhere.py").write_text("")  # a file this run does not time
    (pytester.path / TABLE).write_text(json.dumps({"test_elsewhere.py": 7.0, "test_gone.py": 9.0}))
    run_on_one_worker(pytester, "--record-file-seconds", "test_fast.py", "test_slow.py").assert_outcomes(passed=3)
    table = json.loads((pytester.path / TABLE).read_text())
    assert list(table) == ["test_elsewhere.py", "test_slow.py", "test_fast.py"]  # costliest first; a gone file dropped
    assert table["test_elsewhere.py"] == 7.0 and table["test_slow.py"] >= 0.4 > table["test_fast.py"]
