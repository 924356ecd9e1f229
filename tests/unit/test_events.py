"""The one event reader (engine/record/events.py) and the one path helper (engine.record.paths.events_path):
the latest event of a type, read past torn lines and lookalikes; the file's name written once."""
from __future__ import annotations

import ast

from engine.record.events import EventWriter, latest_event, latest_start, read_events, summarize
from engine.record.paths import EVENTS_FILE, events_path

from tests.conftest import ROOT


def test_the_latest_start_of_a_resumed_run_is_its_last_one_past_lookalikes_and_a_torn_line(tmp_path):
    writer = EventWriter(events_path(tmp_path), "r1")
    writer.emit("start", study="s", world_size=1)
    writer.emit("step", note='a step that says "start"')
    writer.emit("end", status="stopped", error=None)
    writer.emit("start", study="s", world_size=2)
    writer.emit("end", status="failed", error="boom")
    writer.close()
    with open(events_path(tmp_path), "a") as f:
        f.write('{"v": 1, "type": "start", "world_si')  # a crash mid-write
    assert latest_start(tmp_path)["world_size"] == 2
    assert latest_event(tmp_path, "end")["error"] == "boom"
    assert latest_event(tmp_path, "epoch") is None
    summary = summarize(read_events(events_path(tmp_path)))
    assert summary["starts"] == 2 and summary["start"]["world_size"] == 2


def test_a_run_without_events_has_no_latest_start(tmp_path):
    assert latest_start(tmp_path / "never-started") is None
    (tmp_path / "dir-instead" / EVENTS_FILE).mkdir(parents=True)  # unreadable as a file
    assert latest_start(tmp_path / "dir-instead") is None
    assert events_path(tmp_path).name == EVENTS_FILE


def _code_strings(tree: ast.AST):
    """String constants that are code, not docstrings."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node


def test_the_events_file_is_named_in_one_place_in_the_code():
    """Every reader and writer goes through engine.record.paths.events_path (tests may name the file)."""
    found = []
    for package in ("engine", "cifar_tui"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in _code_strings(ast.parse(path.read_text(encoding="utf-8"))):
                if "events.jsonl" in node.value:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert [where.split(":")[0] for where in found] == ["engine/record/paths.py"], found
