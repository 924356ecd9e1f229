#!/usr/bin/env bash
# Stops what start.sh started in DIR: the jobs still there are cancelled, then slurmd,
# slurmctld and munged end. Idempotent. Leaves DIR (its logs) in place.
#
#   sudo tests/support/slurm/stop.sh [DIR]
set -uo pipefail

DIR=${1:-${CIFAR_TUI_SLURM_DIR:-/tmp/cifar-tui-slurm}}
[ -d "$DIR" ] || exit 0
export SLURM_CONF=$DIR/slurm.conf

# a process that ended but whose parent has not reaped it yet (a zombie) counts as gone
running() { [ -r "/proc/$1/stat" ] && [ "$(cut -d')' -f2 "/proc/$1/stat" | cut -d' ' -f2)" != Z ]; }
alive() { [ -s "$1" ] && running "$(cat "$1")"; }

if alive "$DIR/slurmctld.pid" && [ -f "$SLURM_CONF" ]; then
  # every job of this cluster, then a moment for their processes to go
  scancel --full --signal=KILL --partition=debug >/dev/null 2>&1 || true
  for _ in $(seq 50); do
    [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break
    sleep 0.1
  done
fi
stop() {  # SIGTERM to the daemons of these pid files together, then SIGKILL what is left after 5 s
  pids=()
  for pid_file in "$@"; do
    if alive "$pid_file"; then pids+=("$(cat "$pid_file")"); kill "${pids[-1]}" 2>/dev/null; fi
    rm -f "$pid_file"
  done
  for _ in $(seq 50); do
    left=0
    for pid in "${pids[@]}"; do running "$pid" && left=1; done
    [ $left = 0 ] && return
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null; done
}
stop "$DIR/slurmd.pid" "$DIR/slurmctld.pid"
stop "$DIR/munge/munged.pid"  # last: the slurm daemons authenticate as they go
exit 0
