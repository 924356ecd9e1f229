"""Inputs that must be refused cleanly: exit 2, one line on stderr naming the file or key,
no traceback, nothing written. The corpus lives in tests/bad_configs/ (one malformed
config per file); overrides, names that try to leave the workspace, Python-object YAML,
foreign checkpoints and a source scan for eval/exec/unsafe loading are here too.
"""
from __future__ import annotations

import os
import pickle
import random
import re
import sqlite3
import subprocess
from pathlib import Path

import pytest
import torch

from engine.checkpoint import CHECKPOINT_FORMAT, CheckpointError, load_checkpoint, save_checkpoint
from engine.config import ConfigError, check_plain_name, load_config, parse_override, resolve_config_path
from engine.record.paths import check_run_id, resolve_run_id

from tests.conftest import CLI, ROOT
from tests.support.reliability import case_env, drive, one_error_line, record, tally  # noqa: F401 - tally is a fixture

BAD = Path(__file__).resolve().parent.parent / "bad_configs"
RUN_FLAGS = ("--data", "synthetic", "--device", "cpu")
POOL = 4  # CLI processes at a time
CASE_TIMEOUT = 120  # a refusal takes well under a second (an engine-side one a few); more means it was accepted

# file -> a fragment its one-line refusal must contain (besides the file's own path)
EXPECTED = {
    "alias_bomb.yaml": "alias bomb",
    "alias_deep_chain.yaml": "nested more than 50 levels deep after alias expansion",
    "augment_seeding_off_albumentations.yaml": "data.augment_seeding: fixed_per_position reproduces the seed's albumentations",
    "bad_yaml_mapping_in_scalar.yaml": "invalid YAML (line 1",
    "bad_yaml_tab_indent.yaml": "invalid YAML (line 3",
    "bad_yaml_unclosed_list.yaml": "invalid YAML",
    "bad_yaml_unterminated_quote.yaml": "invalid YAML",
    "batch_size_fraction.yaml": "train.batch_size",
    "batch_size_zero.yaml": "train.batch_size: Input should be greater than 0",
    "binary_junk.yaml": "not a UTF-8 text file",
    "deeply_nested_lists.yaml": "nested more than 50 levels",
    "deeply_nested_mappings.yaml": "nested more than 50 levels",
    "device_tpu.yaml": "train.device",
    "duplicate_nested_key.yaml": "duplicate key 'epochs'",
    "duplicate_top_key.yaml": "duplicate key 'name'",
    "empty.yaml": "expected a YAML mapping with a 'name' key, got empty",
    "gzip_archive.yaml": "not a UTF-8 text file",
    "huge_float_lr.yaml": "optim.lr",
    "huge_int_epochs.yaml": "train.epochs: Input should be less than or equal to 100000",
    "huge_int_seed.yaml": "train.seed",
    "image_size_float.yaml": "data.image_size",
    "image_size_negative.yaml": "data.image_size",
    "image_size_string.yaml": "data.image_size",
    "image_size_zero.yaml": "data.image_size",
    "infinite_grad_clip.yaml": "train.grad_clip",
    "kd_empty.yaml": "loss.kd.teacher: required key is missing",
    "kd_teacher_null.yaml": "loss.kd.teacher",
    "label_smoothing_one.yaml": "loss.label_smoothing",
    "list_as_key.yaml": "a list or mapping used as a key",
    "margin_head_without_margin_loss.yaml": "model.head: margin needs loss.margin",
    "margin_with_linear_head.yaml": "loss.margin: arcface needs model.head: margin",
    "missing_name.yaml": "name: required key is missing",
    "multistep_without_milestones.yaml": "schedule.milestones",
    "name_absolute.yaml": "must be a plain file name",
    "name_empty.yaml": "name:",
    "name_path_escape.yaml": "must be a plain file name",
    "nan_lr.yaml": "optim.lr",
    "negative_epochs.yaml": "train.epochs: Input should be greater than 0",
    "non_utf8.yaml": "not a UTF-8 text file",
    "nul_bytes.yaml": "NUL",
    "only_comments.yaml": "got empty",
    "python_module.yaml": "python/module",
    "python_name.yaml": "python/name",
    "python_object_apply.yaml": "python/object/apply",
    "python_object_new.yaml": "python/object/new",
    "recursive_alias.yaml": "after alias expansion",
    "top_level_list.yaml": "got list",
    "top_level_scalar.yaml": "got str",
    "two_documents.yaml": "expected a single document",
    "unknown_data_source.yaml": "data.source",
    "unknown_head.yaml": "model.head",
    "unknown_loss_margin.yaml": "loss.margin",
    "unknown_nested_key.yaml": "train.epoch: unknown key",
    "unknown_optimizer.yaml": "optim.name",
    "unknown_schedule.yaml": "schedule.name",
    "unknown_top_key.yaml": "trainer: unknown key",
    "utf16.yaml": "not a UTF-8 text file",
    "weights_without_pretrained.yaml": "model.weights",
    "wrong_type_betas.yaml": "optim.betas",
    "wrong_type_epochs_bool.yaml": "train.epochs: expected a number, got true",
    "wrong_type_epochs_string.yaml": "train.epochs",
    "wrong_type_section_list.yaml": "model",
    "wrong_type_section_scalar.yaml": "train",
    "zero_epochs.yaml": "train.epochs",
    # Refused by the engine when the run starts (exit 2, run dir removed): the timm model
    # registry and the finished runs are only consulted then, so `show` prints these.
    "unknown_backbone.yaml": "model.backbone: unknown timm model 'resnet19'",
    "kd_unknown_teacher.yaml": "loss.kd.teacher: no finished synthetic run of 'no_such_teacher_run'",
}
ENGINE_REFUSES = {"unknown_backbone.yaml", "kd_unknown_teacher.yaml"}
# `--data`/`--device` override exactly the key these files get wrong: run them without that flag
RUN_FLAGS_FOR = {"unknown_data_source.yaml": ("--device", "cpu"), "device_tpu.yaml": ("--data", "synthetic")}

# --set VALUE -> fragment; each tried with `run` and `show` of a valid config
BAD_OVERRIDES = {
    "train.epochs=-1": "train.epochs: Input should be greater than 0",
    "train.epochs=0": "train.epochs",
    "train.epochs=true": "train.epochs: expected a number, got true",
    "train.epochs=1e400": "train.epochs",
    "train.epochs=1000000000000000000000000000000": "train.epochs: Input should be less than or equal to 100000",
    "train.epochs=1 2": "train.epochs",
    "train.batch_size=0": "train.batch_size: Input should be greater than 0",
    "train.batch_size=many": "train.batch_size",
    "data.image_size=0": "data.image_size",
    "data.image_size=31.5": "data.image_size",
    "data.image_size=[32]": "data.image_size",
    "optim.lr=.inf": "optim.lr",
    "optim.lr=.nan": "optim.lr",
    "optim.lr=1.0e400": "optim.lr",
    "optim.name=lbfgs": "optim.name",
    "model.head=mlp": "model.head",
    "loss.margin=arcface": "needs model.head: margin",
    "model.head=margin": "needs loss.margin",
    "loss.kd={}": "loss.kd.teacher: required key is missing",
    "loss.kd.temperature=2": "loss.kd.teacher: required key is missing",
    "nope.x=1": "nope: unknown key",
    "train.epoch=3": "train.epoch: unknown key",
    "x.__class__=1": "x: unknown key",
    "train.epochs.x=1": "train.epochs is not a section",
    "train=5": "train",
    "noequals": "expected KEY.PATH=VALUE",
    "=5": "must be dotted names",
    "train..epochs=1": "must be dotted names",
    "train.epochs=[unclosed": "invalid YAML",
    "train.epochs={a: 1, a: 2}": "duplicate key 'a'",
    "train.epochs=&a [*a]": "after alias expansion",
    "description=" + "[" * 200 + "]" * 200: "nested more than 50 levels",
    "train.epochs=!!python/object/apply:os.system ['touch PWNED_BY_SET']": "python/object/apply",
    "name=../../etc/x": "must be a plain file name",
    "name=": "name",
    "train.device=tpu": "train.device",
    "data.source=imagenet": "data.source",
}


def _check(base: Path, what: str, res: dict, fragment: str, named: str | None, engine_side: bool) -> str | None:
    """What is wrong with one refusal, or None when it was clean."""
    if res["timed_out"]:
        return f"{what}: still running after {CASE_TIMEOUT}s (accepted?)"
    if res["code"] != 2:
        return f"{what}: exit {res['code']}\n{res['stdout'][-500:]}{res['stderr'][-1500:]}"
    lines = [line for line in res["stderr"].splitlines() if line.strip()]
    if len(lines) != 1 or "Traceback" in res["stderr"] + res["stdout"]:
        return f"{what}: expected one line on stderr, got:\n{res['stderr'][-1500:]}"
    line = lines[0]
    if not line.startswith("error: ") or fragment not in line or (named and named not in line):
        return f"{what}: message {line!r} lacks {fragment!r}" + (f" / {named!r}" if named else "")
    left = sorted(str(p.relative_to(base)) for p in base.rglob("*"))
    if engine_side:  # the launcher made runs/ and the run dir; the refusal removed the run dir
        allowed = {"runs", "runs/cifar_tui.db", "runs/cifar_tui.db-wal", "runs/cifar_tui.db-shm"}
        if not set(left) <= allowed:
            return f"{what}: left {left}"
        if (base / "runs" / "cifar_tui.db").exists():
            rows = sqlite3.connect(base / "runs" / "cifar_tui.db").execute("SELECT COUNT(*) FROM runs").fetchone()[0]
            if rows:
                return f"{what}: {rows} rows in the store"
    elif left:
        return f"{what}: wrote {left}"
    return None


def _run_all(cases: list[tuple]) -> list[str]:
    """Each case (folder, args, fragment, named[, engine_side]); the failures, described."""
    results = drive([(base, args) for base, args, *_ in cases], timeout=CASE_TIMEOUT, parallel=POOL)
    failures = []
    for (base, args, fragment, named, *rest), res in zip(cases, results):
        what = " ".join(a if len(a) < 60 else a[:57] + "..." for a in args)
        problem = _check(base, what, res, fragment, named, bool(rest and rest[0]))
        if problem:
            failures.append(problem)
    return failures


def test_the_fork_driver_answers_like_a_fresh_interpreter(tmp_path):
    sample = [["show", str(BAD / "alias_bomb.yaml")], ["run", str(BAD / "duplicate_top_key.yaml"), *RUN_FLAGS],
              ["show", "resnet18_baseline", "--set", "train.epochs=true"], ["resume", "../x"], ["show", "resnet18_baseline"]]
    forked = drive([(tmp_path / f"fork-{i}", args) for i, args in enumerate(sample)])
    for i, args in enumerate(sample):
        base = tmp_path / f"fresh-{i}"
        base.mkdir()
        res = subprocess.run([*CLI, *args], env=case_env(base), cwd=base, capture_output=True, text=True, timeout=120)
        assert (forked[i]["code"], forked[i]["stderr"], forked[i]["stdout"]) == (res.returncode, res.stderr, res.stdout), args


def test_the_corpus_has_every_kind_of_bad_config():
    files = {p.name for p in BAD.iterdir() if p.is_file()}
    assert files == set(EXPECTED), f"files without expectations: {files - set(EXPECTED)}; missing: {set(EXPECTED) - files}"
    assert len(files) >= 30


def test_every_bad_config_is_refused_by_run_and_show(tmp_path, request):
    cases = []
    for i, name in enumerate(sorted(EXPECTED)):
        path = str(BAD / name)
        engine_side = name in ENGINE_REFUSES
        # the engine reports the config by its value, the CLI by the file
        named = None if engine_side else path
        flags = RUN_FLAGS_FOR.get(name, RUN_FLAGS)
        cases.append((tmp_path / f"run-{i}", ["run", path, *flags], EXPECTED[name], named, engine_side))
        if not engine_side:
            cases.append((tmp_path / f"show-{i}", ["show", path], EXPECTED[name], path))
    failures = _run_all(cases)
    assert not failures, f"{len(failures)} of {len(cases)} not refused cleanly:\n" + "\n".join(failures)
    assert not list(tmp_path.rglob("PWNED*")), "a YAML tag ran a command"
    record(request, inputs_refused=len(cases), bad_config_files=len(EXPECTED))


def test_every_bad_override_is_refused_by_run_and_show(tmp_path, request):
    cases = []
    for i, (item, fragment) in enumerate(BAD_OVERRIDES.items()):
        flags = {"train.device=tpu": ("--data", "synthetic"), "data.source=imagenet": ("--device", "cpu")}.get(item, RUN_FLAGS)
        cases.append((tmp_path / f"run-{i}", ["run", "resnet18_baseline", *flags, "--set", item], fragment, None))
        cases.append((tmp_path / f"show-{i}", ["show", "resnet18_baseline", "--set", item], fragment, None))
    failures = _run_all(cases)
    assert not failures, f"{len(failures)} of {len(cases)} not refused cleanly:\n" + "\n".join(failures)
    assert not list(tmp_path.rglob("PWNED*")), "an override ran a command"
    record(request, inputs_refused=len(cases), bad_overrides=len(BAD_OVERRIDES))


def test_a_config_file_over_the_size_limit_is_refused_unread(tmp_path, request):
    big = tmp_path / "big.yaml"
    big.write_text("name: big\ndescription: '" + "x" * 1_100_000 + "'\n")
    cases = [(tmp_path / "run", ["run", str(big), *RUN_FLAGS], "more than the 1000000 allowed", str(big)),
             (tmp_path / "show", ["show", str(big)], "more than the 1000000 allowed", str(big))]
    failures = _run_all(cases)
    assert not failures, "\n".join(failures)
    record(request, inputs_refused=len(cases))


# ---------------------------------------------------------------------------
# Names that try to leave the workspace


ESCAPES = [
    (["run", "../x", *RUN_FLAGS], "config file not found"),
    (["run", "../../../../etc/shadow", *RUN_FLAGS], "config file not found"),
    (["run", "/etc/passwd", *RUN_FLAGS], "expected a YAML mapping"),
    (["run", "/", *RUN_FLAGS], "config file not found"),
    (["run", "/dev/zero", *RUN_FLAGS], "config file not found"),  # not a regular file: never read
    (["run", "/proc/self/environ", *RUN_FLAGS], "NUL"),
    (["show", "../x"], "config file not found"),
    (["show", "/etc/passwd"], "expected a YAML mapping"),
    (["show", "..\\..\\x"], "expected a plain name"),
    (["show", "a:b"], "expected a plain name"),
    (["resume", "../x"], "run id '../x'"),
    (["resume", "/etc/passwd"], "run id '/etc/passwd'"),
    (["resume", ".."], "run id '..'"),
    (["resume", "."], "run id '.'"),
    (["resume", "a/b"], "run id 'a/b'"),
    (["resume", ""], "run id ''"),
    (["resume", "x\ny"], "run id 'x\\ny'"),
    (["stop", "../x"], "run id '../x'"),
    (["stop", "/etc/passwd"], "run id '/etc/passwd'"),
    (["stop", ".."], "run id '..'"),
]


def test_names_that_try_to_leave_the_workspace_are_refused(tmp_path, request):
    cases = [(tmp_path / f"case-{i}", args, fragment, None) for i, (args, fragment) in enumerate(ESCAPES)]
    failures = _run_all(cases)
    assert not failures, f"{len(failures)} of {len(cases)} not refused cleanly:\n" + "\n".join(failures)
    record(request, inputs_refused=len(cases))


def test_nul_and_escaping_names_at_the_api(tmp_path, request, tally):
    # argv cannot carry a NUL byte, so names with one are tested here, below the CLI
    bad_run_ids = ["a\x00b", "../x", "/etc/passwd", "..", ".", "a/b", "a\\b", "", "x" * 300, "-rf", "a..b", "\x1b[2J"]
    for rid in bad_run_ids:
        with tally.refused(ConfigError, match="run id"):
            check_run_id(rid)
        with tally.refused(ConfigError):
            resolve_run_id(tmp_path, rid)
    for name in ["a\x00b", "../x", "a/b", "..", "", ".hidden"]:
        with tally.refused(ConfigError, match="expected a plain name"):
            check_plain_name(name, "config")
    for ref in ["resnet18_baseline\x00", "x\x00.yaml", "../\x00/x.yaml"]:
        with tally.refused(ConfigError, match="NUL"):
            load_config(ref)
    with tally.refused(ConfigError, match="not found"):
        resolve_config_path("../configs_elsewhere/x.yaml")
    with tally.refused(ConfigError):
        parse_override("train.epochs=1\x00")
    from cifar_tui.workspace import Workspace
    from cifar_tui.launch import resume as launch_resume

    with tally.refused(ConfigError):  # before any process or folder exists
        launch_resume(Workspace(home=tmp_path / "runs", data_root=tmp_path / "data"), "../x")
    assert not (tmp_path / "runs").exists()
    tally.record(request)


def test_plot_output_paths_are_checked(tmp_path, request):
    cases = [(tmp_path / "a", ["plot", "../x", "--out", "x.png"], "run id '../x'", None),
             (tmp_path / "b", ["plot", "/etc/passwd", "--out", "x.png"], "run id '/etc/passwd'", None),
             (tmp_path / "c", ["plot", "some-run", "--out", "/nonexistent-dir/x.png"], "does not exist", None),
             (tmp_path / "d", ["plot", "some-run", "--out", "/etc/passwd"], "expected an image file name", None),
             (tmp_path / "e", ["plot", "some-run", "--out", "/tmp"], "expected an image file name", None)]
    failures = _run_all(cases)
    assert not failures, "\n".join(failures)
    record(request, inputs_refused=len(cases))


# ---------------------------------------------------------------------------
# Nothing is built from Python objects, nothing is evaluated


def test_yaml_that_would_run_a_command_is_refused_without_side_effect(tmp_path, request):
    marker = tmp_path / "pwned"
    payloads = [
        f'name: !!python/object/apply:os.system ["touch {marker}"]\n',
        f'!!python/object/apply:subprocess.check_call [["touch", "{marker}"]]\n',
        f'name: x\ndescription: !!python/object/new:subprocess.Popen [["touch", "{marker}"]]\n',
        f'name: !!python/object:__main__.X {{a: 1}}\n',
    ]
    cases = []
    for i, text in enumerate(payloads):
        path = tmp_path / f"evil{i}.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError, match="could not determine a constructor"):
            load_config(str(path))
        cases.append((tmp_path / f"run-{i}", ["run", str(path), *RUN_FLAGS], "python/object", str(path)))
        cases.append((tmp_path / f"show-{i}", ["show", str(path)], "python/object", str(path)))
    cases.append((tmp_path / "set", ["show", "resnet18_baseline", "--set", f"name=!!python/object/apply:os.system ['touch {marker}']"],
                  "python/object", None))
    failures = _run_all(cases)
    assert not failures, "\n".join(failures)
    assert not marker.exists(), "safe loading ran a command"
    record(request, inputs_refused=len(cases) + len(payloads))


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoints_that_are_not_ours_are_refused_and_never_executed(tmp_path, request, tally):
    marker = tmp_path / "pwned"
    ours = tmp_path / "ours.pt"
    save_checkpoint({"model": {"w": torch.ones(3)}, "epoch": 1}, ours)
    assert load_checkpoint(ours)["epoch"] == 1

    cases = {}
    torch.save({"model": {"w": torch.ones(3)}, "epoch": 1}, tmp_path / "plain.pt")  # a torch file, not ours
    cases["plain.pt"] = "no 'cifar-tui-checkpoint' marker"
    torch.save({"format": CHECKPOINT_FORMAT, "version": 99, "model": {}}, tmp_path / "future.pt")
    cases["future.pt"] = "version 99 is not supported"
    torch.save([1, 2, 3], tmp_path / "list.pt")
    cases["list.pt"] = "no 'cifar-tui-checkpoint' marker"
    torch.save({"format": CHECKPOINT_FORMAT, "version": 1, "x": _Evil(marker)}, tmp_path / "evil_zip.pt")
    cases["evil_zip.pt"] = "refused"
    (tmp_path / "evil_raw.pt").write_bytes(pickle.dumps({"format": CHECKPOINT_FORMAT, "x": _Evil(marker)}, protocol=2))
    cases["evil_raw.pt"] = "refused"
    (tmp_path / "truncated.pt").write_bytes(ours.read_bytes()[: ours.stat().st_size // 2])
    cases["truncated.pt"] = "damaged"
    (tmp_path / "junk.pt").write_bytes(bytes(random.Random(3).randrange(256) for _ in range(2048)))
    cases["junk.pt"] = "cifar-tui checkpoint"
    (tmp_path / "empty.pt").write_bytes(b"")
    cases["empty.pt"] = "not a readable cifar-tui checkpoint"
    for name, fragment in cases.items():
        with tally.refused(CheckpointError) as exc:
            load_checkpoint(tmp_path / name)
        msg = str(exc.value)
        assert fragment in msg and str(tmp_path / name) in msg and "\n" not in msg, msg
    with tally.refused(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")

    # pretrained weights from a config's model.weights go through timm's weights-only loading too
    from engine.config import ModelConfig
    from engine.models import WeightsError, build_model

    for name in ("evil_zip.pt", "evil_raw.pt"):
        with tally.refused(WeightsError, match="model.weights"):
            build_model(ModelConfig(backbone="test_resnet", pretrained=True, weights=str(tmp_path / name)))
    assert not marker.exists(), "loading a checkpoint ran a command"
    tally.record(request)


def test_resume_of_a_run_whose_checkpoint_is_not_ours_exits_2_and_keeps_the_run(tmp_path, request):
    marker = tmp_path / "pwned"
    home = tmp_path / "runs"
    run_id = "resnet18_baseline-20260101T000000Z-dead"
    rdir = home / run_id
    (rdir / "checkpoints").mkdir(parents=True)
    cfg = load_config("resnet18_baseline", ["model.backbone=test_resnet", "data.source=synthetic", "data.train_limit=64",
                                             "data.test_limit=32", "train.device=cpu", "train.epochs=2"])
    (rdir / "config.yaml").write_text(cfg.to_yaml())
    # a copied-in run: config and checkpoints, no events file (the launcher must not delete it)
    last = rdir / "checkpoints" / "last.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "version": 1, "x": _Evil(marker)}, last)
    before = last.read_bytes()
    res = subprocess.run([*CLI, "resume", run_id], env=case_env(tmp_path), cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 2, res.stdout + res.stderr
    line = one_error_line(res.stderr)
    assert str(last) in line and "refused" in line
    assert not marker.exists()
    assert last.read_bytes() == before and (rdir / "config.yaml").is_file(), "the run dir was changed or removed"
    assert not (rdir / "events.jsonl").exists()
    record(request, inputs_refused=1)  # this one resume


# ---------------------------------------------------------------------------
# Source scan

FORBIDDEN = [
    (re.compile(r"\bglobals\(\)\s*\["), "look-up in globals()"),
    (re.compile(r"\blocals\(\)\s*\["), "look-up in locals()"),
    (re.compile(r"(?<![\w.])eval\("), "eval("),
    (re.compile(r"(?<![\w.])exec\("), "exec("),
    (re.compile(r"(?<![\w.])compile\((?!self)"), "compile( of source text"),
    (re.compile(r"\bimportlib\.import_module\("), "importlib.import_module("),
    (re.compile(r"(?<![\w.])__import__\("), "__import__("),
    (re.compile(r"\byaml\.(unsafe_load|full_load|load_all|unsafe_load_all)\("), "unsafe YAML loading"),
    (re.compile(r"\byaml\.load\((?![^)]*Loader\s*=\s*(yaml\.)?(C?SafeLoader|_UniqueKeyLoader)\b)"), "yaml.load( without a safe loader"),
    (re.compile(r"\b(yaml\.)?(Full|Unsafe)Loader\b|\byaml\.Loader\b"), "an unsafe YAML loader"),
    (re.compile(r"weights_only\s*=\s*False"), "weights_only=False"),
    (re.compile(r"\btorch\.load\((?![^)]*weights_only\s*=\s*True)"), "torch.load( without weights_only=True"),
    (re.compile(r"\bpickle\.loads?\(|\bpickle\.Unpickler\((?!.*find_class)"), "unrestricted pickle loading"),
    (re.compile(r"shell\s*=\s*True"), "a shell command"),
    (re.compile(r"\bos\.(system|popen)\("), "os.system/os.popen"),
]


def test_nothing_is_evaluated_imported_by_name_or_unpickled_unsafely():
    sources = sorted((ROOT / "engine").rglob("*.py")) + sorted((ROOT / "cifar_tui").rglob("*.py"))
    assert len(sources) > 10
    hits = []
    for path in sources:
        text = path.read_text()
        code = "\n".join(re.sub(r"#.*$", "", line) if not line.lstrip().startswith(('"', "'")) else "" for line in text.splitlines())
        for pattern, what in FORBIDDEN:
            for m in pattern.finditer(code):
                line_no = code.count("\n", 0, m.start()) + 1
                hits.append(f"{path.relative_to(ROOT)}:{line_no}: {what}: {code.splitlines()[line_no - 1].strip()}")
    assert not hits, "\n".join(hits)
    # the one pickle reader allows only what a CIFAR pickle holds
    assert "class _CifarUnpickler(pickle.Unpickler)" in (ROOT / "engine" / "data" / "formats.py").read_text()
