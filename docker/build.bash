#!/usr/bin/env bash
# Build the cifar-tui image from this checkout: bash docker/build.bash [docker build options]
# CIFAR_TUI_IMAGE names the image (default cifar-tui); another PyTorch base image:
#   bash docker/build.bash --build-arg BASE_IMAGE=pytorch/pytorch:<tag>-runtime
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
image="${CIFAR_TUI_IMAGE:-cifar-tui}"
docker build -f "$root/docker/Dockerfile" -t "$image" "$@" "$root"
echo "built $image; run it with: bash docker/run.bash"
