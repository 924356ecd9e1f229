#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, for the tests and for trying `--launcher slurm`
# on a laptop: munged (as the munge user), slurmctld and slurmd, every file of theirs under one
# directory. Idempotent: what already runs is left as it is. Stop it with stop.sh (same DIR).
#
#   sudo tests/support/slurm/start.sh [DIR]     # DIR default: $CIFAR_TUI_SLURM_DIR or /tmp/cifar-tui-slurm
#   export SLURM_CONF=DIR/slurm.conf            # the last line it prints; then sinfo, sbatch, cifar-tui ...
#
# Environment: CIFAR_TUI_SLURM_PORT (slurmctld's port, slurmd the next one; default 6817),
# CIFAR_TUI_SLURM_CPUS (CPUs the node offers; default this machine's), CIFAR_TUI_SLURM_MAXTIME
# (the partition's MaxTime in minutes; default 30), CIFAR_TUI_SLURM_KILLWAIT (seconds between a
# cancelled job's SIGTERM and SIGKILL; default 30, as SLURM's). Needs root (slurmd runs jobs as their user)
# and Debian's slurm-wlm + munge (apt-get install slurm-wlm munge).
set -euo pipefail

DIR=${1:-${CIFAR_TUI_SLURM_DIR:-/tmp/cifar-tui-slurm}}
PORT=${CIFAR_TUI_SLURM_PORT:-6817}
CPUS=${CIFAR_TUI_SLURM_CPUS:-$(nproc)}
MAXTIME=${CIFAR_TUI_SLURM_MAXTIME:-30}
KILLWAIT=${CIFAR_TUI_SLURM_KILLWAIT:-30}
PARTITION=debug
KEY=${CIFAR_TUI_MUNGE_KEY:-/etc/munge/munge.key}
HOST=$(hostname -s)
WAIT_S=${CIFAR_TUI_SLURM_WAIT_S:-30}

say() { echo "slurm: $*" >&2; }
die() { echo "slurm: error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (munged runs as the munge user, slurmd as root): sudo $0 $*"
for tool in munged slurmctld slurmd sinfo; do
  command -v "$tool" >/dev/null || die "$tool not found: apt-get install slurm-wlm munge"
done
id munge >/dev/null 2>&1 || die "no munge user: apt-get install munge"

mkdir -p "$DIR"/{state,spool,log,munge}
DIR=$(cd "$DIR" && pwd -P)
chmod 755 "$DIR"
chown munge:munge "$DIR/munge"
chmod 755 "$DIR/munge"  # clients (jobs of any user) reach munged's socket here
runuser -u munge -- test -w "$DIR/munge" || die "the munge user cannot reach $DIR (a parent folder closed to others?)"
CONF=$DIR/slurm.conf
SOCKET=$DIR/munge/munge.socket

# a process that ended but whose parent has not reaped it yet (a zombie) counts as gone
running() { [ -r "/proc/$1/stat" ] && [ "$(cut -d')' -f2 "/proc/$1/stat" | cut -d' ' -f2)" != Z ]; }
alive() { [ -s "$1" ] && running "$(cat "$1")"; }

# -- munge: one key shared by every host of a cluster (here one): 1 KiB random, 0400, owned by munge
if [ ! -s "$KEY" ]; then
  mkdir -p "$(dirname "$KEY")"
  dd if=/dev/urandom of="$KEY" bs=1024 count=1 status=none
  say "created the munge key $KEY"
fi
chown munge:munge "$KEY"
chmod 400 "$KEY"
if ! alive "$DIR/munge/munged.pid"; then
  runuser -u munge -- munged --socket="$SOCKET" --key-file="$KEY" --pid-file="$DIR/munge/munged.pid" \
    --log-file="$DIR/munge/munged.log" --seed-file="$DIR/munge/munged.seed" \
    || die "munged did not start (see $DIR/munge/munged.log)"
fi

# -- slurm.conf for this machine
MEM_MB=$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
cat > "$CONF.new" <<EOF
# written by tests/support/slurm/start.sh: a one-node cluster on $HOST
ClusterName=cifartui
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCKET
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
# no cgroups here (containers, laptops without the cgroup setup): processes tracked by their parents
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
# a job over the partition's limits is refused at submission, not left pending for ever
EnforcePartLimits=ALL
# seconds between SIGTERM and SIGKILL (scancel, time limit): the engine checkpoints meanwhile
KillWait=$KILLWAIT
MinJobAge=300
SlurmdParameters=config_overrides
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=$MAXTIME State=UP
EOF
if ! cmp -s "$CONF.new" "$CONF" 2>/dev/null; then
  mv "$CONF.new" "$CONF"
  changed=1
else
  rm -f "$CONF.new"
  changed=0
fi
export SLURM_CONF=$CONF

# -- the daemons (a changed slurm.conf: restarted)
if [ "$changed" = 1 ]; then
  for pid_file in "$DIR/slurmd.pid" "$DIR/slurmctld.pid"; do
    if alive "$pid_file"; then kill "$(cat "$pid_file")"; sleep 1; fi
  done
fi
alive "$DIR/slurmctld.pid" || slurmctld -f "$CONF" || die "slurmctld did not start (see $DIR/log/slurmctld.log)"
alive "$DIR/slurmd.pid" || slurmd -f "$CONF" || die "slurmd did not start (see $DIR/log/slurmd.log)"

deadline=$((SECONDS + WAIT_S))
until [ "$(sinfo -h -N -n "$HOST" -o %t 2>/dev/null)" = idle ] \
   || [ "$(sinfo -h -N -n "$HOST" -o %t 2>/dev/null)" = mix ] \
   || [ "$(sinfo -h -N -n "$HOST" -o %t 2>/dev/null)" = alloc ]; do
  if [ $SECONDS -ge $deadline ]; then
    state=$(sinfo -h -N -n "$HOST" -o '%t %E' 2>&1 | head -1)
    die "node $HOST not idle after ${WAIT_S}s (sinfo: ${state:-no answer}); logs in $DIR/log"
  fi
  # a node left down by an earlier run of this cluster comes back
  case "$(sinfo -h -N -n "$HOST" -o %t 2>/dev/null)" in
    down*|drain*) scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true ;;
  esac
  sleep 0.2
done
say "cluster up: partition $PARTITION, node $HOST ($CPUS CPUs), MaxTime ${MAXTIME} min, slurmctld port $PORT"
echo "export SLURM_CONF=$CONF"
