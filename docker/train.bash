#!/usr/bin/env bash
# Train one experiment headless in the image, as in the seed:
#   bash docker/train.bash resnet18_baseline [cifar-tui run options, e.g. --nproc 2]
set -euo pipefail
if [ "$#" -lt 1 ]; then
  echo "usage: bash docker/train.bash NAME [cifar-tui run options]   (names: cifar-tui list)" >&2
  exit 2
fi
exec bash "$(dirname "${BASH_SOURCE[0]}")/run.bash" run "$@"
