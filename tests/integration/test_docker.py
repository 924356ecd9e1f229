"""docker/: valid scripts, an image installed the way the README installs the project.

The scripts run against a stand-in `docker` that prints its arguments; the image itself is built
and run only where a docker engine answers and CIFAR_TUI_DOCKER_BUILD=1 asks for it (minutes)."""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

DOCKER = ROOT / "docker"
BUILD_ENV = "CIFAR_TUI_DOCKER_BUILD"
SCRIPTS = ["build.bash", "run.bash", "train.bash"]


@pytest.mark.parametrize("name", SCRIPTS)
def test_scripts_are_valid_bash(name):
    res = subprocess.run(["bash", "-n", str(DOCKER / name)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def _logical_lines(text: str) -> list[str]:
    """Lines with backslash continuations joined."""
    return text.replace("\\\n", " ").splitlines()


def _pip_installs(commands: list[str]) -> list[list[str]]:
    """The arguments of each `pip install` in shell commands, options such as --no-cache-dir left out."""
    found = []
    for command in commands:
        for part in re.split(r"&&|;", command):
            words = shlex.split(part)
            for i, word in enumerate(words[:-1]):
                if Path(word).name == "pip" and words[i + 1] == "install":
                    found.append([w for w in words[i + 2:] if not w.startswith("--")])
    return found


def _makefile_installs() -> list[list[str]]:
    text = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^\$\(STAMP\):.*\n((?:\t.*\n)+)", text, re.M)
    assert recipe, "Makefile: no $(STAMP) recipe"
    lines = [line.strip().replace("$(BIN)/pip", "pip") for line in recipe.group(1).splitlines()]
    return [args for args in _pip_installs(lines) if args != ["pip"]]  # `pip install --upgrade pip` is the venv's own


def _dockerfile_installs() -> list[list[str]]:
    runs = [line.split(None, 1)[1] for line in _logical_lines((DOCKER / "Dockerfile").read_text())
            if line.strip().upper().startswith("RUN ")]
    return _pip_installs(runs)


def test_the_dockerfile_runs_the_makefiles_pip_installs_which_the_readme_uses():
    """What the text can tell without a docker engine: the README installs through the Makefile,
    and the Dockerfile's `pip install` commands are the Makefile's, in order, with the same
    arguments. test_the_image_builds_and_runs_the_cli builds the image where docker can."""
    readme = (ROOT / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "make run" in quick_start and "make test" in quick_start  # the README installs through the Makefile
    make = _makefile_installs()
    assert make and ["-e", ".[test]"] in make
    assert _dockerfile_installs() == make


def _docker_daemon() -> str | None:
    """Why the image cannot be built here (None: it can)."""
    if shutil.which("docker") is None:
        return "no docker client"
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"docker info: {exc}"
    if info.returncode != 0:
        return "no docker engine answers (docker info: " + (info.stderr.strip().splitlines() or ["failed"])[-1] + ")"
    if os.environ.get(BUILD_ENV) != "1":
        return f"a docker engine answers; {BUILD_ENV}=1 builds the image (minutes: it pulls the PyTorch base image)"
    return None


@pytest.mark.timeout(3600)
def test_the_image_builds_and_runs_the_cli():
    """The image as docker/build.bash builds it: the CLI answers inside it, lists every config,
    and the packages of the [test] extra import (installed as the README installs them)."""
    why_not = _docker_daemon()
    if why_not:
        pytest.skip(why_not)
    tag = "cifar-tui-test-image"
    build = subprocess.run(["bash", str(DOCKER / "build.bash")], env={**os.environ, "CIFAR_TUI_IMAGE": tag},
                           capture_output=True, text=True, timeout=3000)
    assert build.returncode == 0, build.stderr[-3000:]
    try:
        listed = subprocess.run(["docker", "run", "--rm", tag, "list", "--json"], capture_output=True, text=True,
                                timeout=300)
        assert listed.returncode == 0, listed.stderr
        names = [json.loads(line)["name"] for line in listed.stdout.splitlines()]
        assert names == sorted(p.stem for p in (ROOT / "configs").glob("*.yaml"))
        imports = subprocess.run(["docker", "run", "--rm", "--entrypoint", "python", tag, "-c",
                                  "import cifar_tui, engine, torch, timm, optuna, submitit, textual_serve, pytest"],
                                 capture_output=True, text=True, timeout=300)
        assert imports.returncode == 0, imports.stderr
    finally:
        subprocess.run(["docker", "image", "rm", "-f", tag], capture_output=True, timeout=300)


def test_the_image_is_an_official_pytorch_cuda_runtime_with_the_workspace_dirs():
    text = (DOCKER / "Dockerfile").read_text()
    base = re.search(r"^ARG BASE_IMAGE=(\S+)", text, re.M)
    assert base and re.fullmatch(r"pytorch/pytorch:[\d.]+-cuda[\d.]+-cudnn\d+-runtime", base.group(1))
    assert re.search(r"^FROM \$\{BASE_IMAGE\}", text, re.M)
    assert "CIFAR_TUI_HOME=/runs" in text and "CIFAR_TUI_DATA=/data" in text
    assert 'ENTRYPOINT ["cifar-tui"]' in text


def test_dockerignore_keeps_local_state_out_of_the_image():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv", "runs", "data"} <= ignored


@pytest.fixture
def fake_docker(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    (bin_dir / "docker").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "HOME": str(tmp_path / "home"),
           "CIFAR_TUI_DATA": str(tmp_path / "d"), "CIFAR_TUI_HOME": str(tmp_path / "r")}
    env.pop("CIFAR_TUI_DOCKER_ARGS", None)
    return env


def test_train_script_runs_the_experiment_with_gpus_shm_and_mounts(fake_docker, tmp_path):
    res = subprocess.run(["bash", str(DOCKER / "train.bash"), "resnet18_baseline", "--nproc", "2"], env=fake_docker,
                         capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    args = res.stdout.splitlines()
    assert args[:2] == ["run", "--rm"]
    assert args[args.index("--gpus") + 1] == "all" and "--ipc=host" in args
    mounts = [args[i + 1] for i, a in enumerate(args) if a == "-v"]
    assert f"{tmp_path / 'd'}:/data" in mounts and f"{tmp_path / 'r'}:/runs" in mounts
    assert args[-5:] == ["cifar-tui", "run", "resnet18_baseline", "--nproc", "2"]
    assert (tmp_path / "d").is_dir() and (tmp_path / "r").is_dir()


def test_train_script_wants_a_name(fake_docker):
    res = subprocess.run(["bash", str(DOCKER / "train.bash")], env=fake_docker, capture_output=True, text=True)
    assert res.returncode == 2 and "usage" in res.stderr


def test_build_script_builds_the_checkout(fake_docker):
    res = subprocess.run(["bash", str(DOCKER / "build.bash")], env=fake_docker, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    args = res.stdout.splitlines()
    assert args[0] == "build" and args[args.index("-f") + 1] == str(DOCKER / "Dockerfile")
    assert args[args.index("-t") + 1] == "cifar-tui" and args[-2] == str(ROOT)
