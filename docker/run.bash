#!/usr/bin/env bash
# Run cifar-tui in the image on the host's GPUs, with the checkout's data/ and runs/ mounted:
#   bash docker/run.bash                                    the TUI
#   bash docker/run.bash run resnet18_baseline --nproc 2    any cifar-tui command
# Environment: CIFAR_TUI_DATA, CIFAR_TUI_HOME (host dirs for data and runs), CIFAR_TUI_CACHE
# (pretrained weights cache), CIFAR_TUI_IMAGE, CIFAR_TUI_GPUS_FLAG (docker's --gpus value,
# default all), CIFAR_TUI_DOCKER_ARGS (more docker run options, e.g. "--network=host" for a
# multi-node torchrun).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
image="${CIFAR_TUI_IMAGE:-cifar-tui}"
data="${CIFAR_TUI_DATA:-$root/data}"
runs="${CIFAR_TUI_HOME:-$root/runs}"
cache="${CIFAR_TUI_CACHE:-${HOME:-/tmp}/.cache/cifar-tui}"
mkdir -p "$data" "$runs" "$cache"
data="$(cd "$data" && pwd)" runs="$(cd "$runs" && pwd)" cache="$(cd "$cache" && pwd)"  # docker -v wants absolute paths

tty=()
if [ -t 0 ] && [ -t 1 ]; then tty=(-it); fi
read -r -a extra <<< "${CIFAR_TUI_DOCKER_ARGS:-}"

# --ipc=host: DataLoader workers and NCCL share memory through /dev/shm, which docker
# otherwise caps at 64 MB (use --shm-size=16g in CIFAR_TUI_DOCKER_ARGS instead if preferred).
# Files in data/ and runs/ belong to the calling user, not root.
exec docker run --rm ${tty[@]+"${tty[@]}"} \
  --gpus "${CIFAR_TUI_GPUS_FLAG:-all}" --ipc=host \
  --user "$(id -u):$(id -g)" -e HOME=/tmp \
  -v "$data:/data" -v "$runs:/runs" -v "$cache:/cache" \
  -e CIFAR_TUI_DATA=/data -e CIFAR_TUI_HOME=/runs \
  -e HF_HOME=/cache/huggingface -e TORCH_HOME=/cache/torch \
  ${extra[@]+"${extra[@]}"} "$image" "$@"
