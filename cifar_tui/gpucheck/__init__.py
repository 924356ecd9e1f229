"""The GPU check (`scripts/gpu-check.sh`, `python -m cifar_tui.gpucheck`): `check` plans and runs
it (environment, NCCL, the bench, every config's steps), `probe` is its torch side (run in child
processes), `report` prints its one table."""
