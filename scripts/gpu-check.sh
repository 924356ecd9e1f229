#!/usr/bin/env bash
# The GPU check, one command (see cifar_tui/gpu_check.py): environment, a 1-process NCCL run, the
# GPU bench, and a few hundred steps of every config at its full batch size on synthetic data with
# torch.compile off and on, with peak GPU memory: one table (under 8 minutes on one H200). Then the
# GPU suite (tests/gpu, `make test-gpu`): the CUDA paths checked for real, a few minutes more.
#
#   scripts/gpu-check.sh                       everything (exit 1 if a config, NCCL or a GPU test failed)
#   scripts/gpu-check.sh --no-tests            the check without the GPU suite
#   scripts/gpu-check.sh --dry-run             the plan only (no torch, no GPU, no tests)
#   scripts/gpu-check.sh --configs resnet18_fast --compile on --json out.json
#   scripts/gpu-check.sh --help                every option of the check
#
# The GPU suite runs after a check on CUDA (not with --device cpu, --dry-run or --help).
# Python: $PYTHON, else the checkout's .venv, else python3 (with cifar-tui's dependencies installed).
set -uo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-}
if [[ -z "$python" ]]; then
    if [[ -x .venv/bin/python ]]; then python=.venv/bin/python; else python=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

tests=1
args=()
previous=""
for arg in "$@"; do
    case "$arg" in
        --no-tests) tests=0; continue ;;
        --dry-run|--help|-h) tests=0 ;;
        --device=cpu) tests=0 ;;
    esac
    if [[ "$previous" == "--device" && "$arg" == "cpu" ]]; then tests=0; fi
    previous="$arg"
    args+=("$arg")
done

"$python" -m cifar_tui.gpu_check "${args[@]+"${args[@]}"}"
check=$?
if [[ $tests -eq 0 ]]; then
    exit $check
fi
echo
echo "GPU suite (tests/gpu) ..."
CIFAR_TUI_REQUIRE_GPU=1 "$python" -m pytest -q -p no:cacheprovider -m gpu tests/gpu
suite=$?
if [[ $check -ne 0 || $suite -ne 0 ]]; then
    exit 1
fi
exit 0
