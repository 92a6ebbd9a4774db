#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, to try hydra/launcher=slurm on a laptop and for the
# cluster tests (make test-cluster). Needs Debian's slurmctld, slurmd, slurm-client and munge:
#   sudo apt-get install --no-install-recommends slurmctld slurmd slurm-client munge
# and root (slurmd starts jobs as their users; munged runs as the munge user).
#   bash scripts/slurm_cluster.sh start DIR    # then: export SLURM_CONF=DIR/slurm.conf
#   bash scripts/slurm_cluster.sh status DIR
#   bash scripts/slurm_cluster.sh stop DIR
# Everything lives under DIR: munge's key and socket, slurm.conf, state, spool, logs, pid files.
# Partitions: "debug" (the default) and "debug_grace", whose jobs "urgent" jobs preempt by
# requeueing them: at once in debug (SIGTERM, then SIGKILL), after a 20 s grace time in
# debug_grace (the job's own signal, e.g. submitit's USR2, at the start of it).
set -euo pipefail
ACTION=${1:?usage: slurm_cluster.sh start|stop|status DIR}
DIR=$(realpath -m "${2:?usage: slurm_cluster.sh start|stop|status DIR}")
CONF="$DIR/slurm.conf"
SOCKET="$DIR/munge/run/munge.socket.2"

need() {
  for binary in slurmctld slurmd sbatch munged; do
    command -v "$binary" >/dev/null || PATH="$PATH:/usr/sbin" command -v "$binary" >/dev/null || {
      echo "error: $binary not found: sudo apt-get install --no-install-recommends slurmctld slurmd slurm-client munge" >&2
      exit 2; }
  done
  export PATH="$PATH:/usr/sbin"
}

write_conf() {
  local node host
  node=$(slurmd -C | head -1)
  host=$(hostname -s)
  cat > "$CONF" <<EOF
ClusterName=mdnlab
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCKET,cred_expire=10
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldPort=${SLURMCTLD_PORT:-6817}
SlurmdPort=${SLURMD_PORT:-6818}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
JobRequeue=1
MinJobAge=300
KillWait=10
SchedulerParameters=sched_interval=1,bf_interval=1
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal
$node State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE
PartitionName=urgent Nodes=$host MaxTime=INFINITE State=UP PriorityTier=10 PreemptMode=OFF
EOF
  # the grace time is a property of the preempted job's partition: a second debug-like partition
  sed -i "s/^PartitionName=debug .*/&\nPartitionName=debug_grace Nodes=$host MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE GraceTime=20/" "$CONF"
}

start() {
  need
  if [ -f "$DIR/slurmctld.pid" ] && kill -0 "$(cat "$DIR/slurmctld.pid")" 2>/dev/null; then
    echo "already running: export SLURM_CONF=$CONF"; return 0
  fi
  mkdir -p "$DIR"/{state,spool,log} "$DIR/munge/run"
  chmod 0711 "$DIR"
  runuser -u munge -- test -x "$DIR/munge" || {
    echo "error: the munge user cannot reach $DIR (a folder above it is closed to others): pick another DIR" >&2
    exit 2; }
  chown -R munge:munge "$DIR/munge"
  chmod 0711 "$DIR/munge"       # clients reach the socket through it; munged wants x for all
  chmod 0755 "$DIR/munge/run"   # the socket's directory: munged requires 0755
  if [ ! -f "$DIR/munge/munge.key" ]; then
    dd if=/dev/urandom bs=1 count=1024 of="$DIR/munge/munge.key" status=none
    chown munge:munge "$DIR/munge/munge.key"; chmod 0400 "$DIR/munge/munge.key"
  fi
  runuser -u munge -- munged --key-file="$DIR/munge/munge.key" --socket="$SOCKET" \
    --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" --seed-file="$DIR/munge/munged.seed"
  write_conf
  SLURM_CONF="$CONF" slurmctld -i
  SLURM_CONF="$CONF" slurmd
  for _ in $(seq 50); do
    SLURM_CONF="$CONF" sinfo -h -o %t 2>/dev/null | grep -qE '^idle' && { echo "started: export SLURM_CONF=$CONF"; return 0; }
    sleep 0.05
  done
  echo "error: the node did not come up; see $DIR/log/" >&2
  exit 1
}

stop() {
  local pid_file
  # jobs first, so slurmd ends their steps (a job left running outlives its daemons)
  if [ -f "$DIR/slurmctld.pid" ] && kill -0 "$(cat "$DIR/slurmctld.pid")" 2>/dev/null; then
    SLURM_CONF="$CONF" scancel --user="$(id -un)" 2>/dev/null || true
    for _ in $(seq 150); do
      [ -z "$(SLURM_CONF="$CONF" squeue -h -o %i 2>/dev/null)" ] && break
      sleep 0.1
    done
  fi
  for pid_file in "$DIR/slurmd.pid" "$DIR/slurmctld.pid" "$DIR/munge/munged.pid"; do
    [ -f "$pid_file" ] && kill "$(cat "$pid_file")" 2>/dev/null || true
  done
  for pid_file in "$DIR/slurmd.pid" "$DIR/slurmctld.pid" "$DIR/munge/munged.pid"; do
    for _ in $(seq 50); do
      [ -f "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null || break
      sleep 0.1
    done
  done
  echo "stopped"
}

case "$ACTION" in
  start) start ;;
  stop) stop ;;
  status) need; SLURM_CONF="$CONF" sinfo; SLURM_CONF="$CONF" squeue ;;
  *) echo "usage: slurm_cluster.sh start|stop|status DIR" >&2; exit 2 ;;
esac
