#!/usr/bin/env bash
# The GPU check, one command, under 8 minutes on one H200 (see cifar_tui/gpu_check.py):
# environment, a 1-process NCCL run, the GPU bench, and a few hundred steps of every config at its
# full batch size on synthetic data with torch.compile off and on, with peak GPU memory: one table.
#
#   scripts/gpu-check.sh                       everything (exit 1 if a config or NCCL failed)
#   scripts/gpu-check.sh --dry-run             the plan only (no torch, no GPU)
#   scripts/gpu-check.sh --configs resnet18_fast --compile on --json out.json
#   scripts/gpu-check.sh --help                every option
#
# Python: $PYTHON, else the checkout's .venv, else python3 (with cifar-tui's dependencies installed).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-}
if [[ -z "$python" ]]; then
    if [[ -x .venv/bin/python ]]; then python=.venv/bin/python; else python=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$python" -m cifar_tui.gpu_check "$@"
