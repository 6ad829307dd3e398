#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for the tests and for trying the cluster recipe:
#   scripts/slurm-local.sh start    install (Debian's slurmctld, slurmd, munge) if missing, configure, start
#   scripts/slurm-local.sh status   whether the daemons run and the node is idle (exit 0 when usable)
#   scripts/slurm-local.sh stop     stop the daemons it started, by PID
# Idempotent: start on a running cluster only checks it. Needs root (or passwordless sudo) to install and
# to run the daemons; without systemd the daemons are started by hand (docs/cluster.md).
# One partition `debug` with every core and most of the memory; no accounting: nin's SLURM launcher
# follows jobs through squeue/scontrol as well, so it does not need sacct.
set -u
STATE=/var/lib/nin-slurm          # PID files of the daemons this script started
CONF=/etc/slurm/slurm.conf
MARK="# written by nin's scripts/slurm-local.sh"

if [ "$(id -u)" = 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=none; fi

say() { echo "slurm-local: $*"; }

alive() { [ -f "$STATE/$1.pid" ] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }

node_ready() {
  local state
  state=$(sinfo -h -N -o '%t' 2>/dev/null | head -n 1)
  case "$state" in idle|mix|alloc|idle~|comp) return 0 ;; *) return 1 ;; esac
}

install() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null && command -v sbatch >/dev/null; then
    return 0
  fi
  [ "$SUDO" != none ] || { say "cannot install SLURM: needs root or passwordless sudo"; return 1; }
  command -v apt-get >/dev/null || { say "cannot install SLURM: no apt-get here"; return 1; }
  say "installing slurmctld, slurmd, slurm-client, munge (Debian packages)"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -q slurmctld slurmd slurm-client munge >/dev/null 2>&1 \
    || { $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q slurmctld slurmd slurm-client munge >/dev/null 2>&1; } \
    || { say "apt-get install failed"; return 1; }
}

configure() {
  local host cpus mem
  host=$(hostname -s)
  cpus=$(nproc)
  mem=$(( $(free -m | awk '/^Mem:/ {print $2}') * 9 / 10 ))
  if [ -f "$CONF" ] && ! grep -q "$MARK" "$CONF"; then
    say "$CONF exists and was not written by this script: leaving it as it is"
    return 0
  fi
  $SUDO mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm "$STATE"
  $SUDO tee "$CONF" >/dev/null <<EOF
$MARK
ClusterName=nintest
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
JobRequeue=1
MinJobAge=600
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
KillWait=10
NodeName=$host CPUs=$cpus Boards=1 SocketsPerBoard=1 CoresPerSocket=$cpus ThreadsPerCore=1 RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

start_daemon() {  # name, command...
  local name=$1; shift
  alive "$name" && return 0
  $SUDO setsid nohup "$@" >"/var/log/slurm/$name.out" 2>&1 < /dev/null &
  echo $! | $SUDO tee "$STATE/$name.pid" >/dev/null
}

start() {
  install || exit 1
  configure || exit 1
  $SUDO mkdir -p /run/munge "$STATE" /var/log/slurm && $SUDO chown munge:munge /run/munge
  if ! alive munged; then
    $SUDO su -s /bin/sh munge -c "/usr/sbin/munged --foreground" >/var/log/slurm/munged.out 2>&1 < /dev/null &
    echo $! | $SUDO tee "$STATE/munged.pid" >/dev/null
  fi
  sleep 1
  start_daemon slurmctld slurmctld -D -c -f "$CONF"   # -c: a fresh queue, no jobs left from an earlier run
  sleep 2
  start_daemon slurmd slurmd -D -f "$CONF"
  for _ in $(seq 1 60); do
    node_ready && { say "up: $(sinfo -h -o '%P %a %D %t %c CPUs %m MB' | head -n 1)"; return 0; }
    scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true
    sleep 1
  done
  say "the node did not become idle within 60 s: $(sinfo -h -N 2>&1 | head -n 1); logs in /var/log/slurm"
  exit 1
}

stop() {
  for name in slurmd slurmctld munged; do
    if alive "$name"; then
      pid=$(cat "$STATE/$name.pid")
      $SUDO kill -TERM "$pid" 2>/dev/null
      for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      kill -0 "$pid" 2>/dev/null && $SUDO kill -KILL "$pid" 2>/dev/null
      say "stopped $name (pid $pid)"
    fi
    $SUDO rm -f "$STATE/$name.pid"
  done
  # munged run through `su` leaves its own daemon PID here
  if [ -f /run/munge/munged.pid ] && kill -0 "$(cat /run/munge/munged.pid)" 2>/dev/null; then
    $SUDO kill -TERM "$(cat /run/munge/munged.pid)" 2>/dev/null
  fi
  return 0
}

status() {
  local ok=0
  for name in munged slurmctld slurmd; do
    if alive "$name"; then echo "$name: running (pid $(cat "$STATE/$name.pid"))"; else echo "$name: not running"; ok=1; fi
  done
  if node_ready; then echo "node: $(sinfo -h -N -o '%N %t' | head -n 1)"; else echo "node: not ready"; ok=1; fi
  return $ok
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
