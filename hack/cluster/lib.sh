# Shared helpers for the local-cluster scripts (sourced, not executed).
# shellcheck shell=bash
set -euo pipefail

K8S_VERSION=1.20.2
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE_DIR=${CODETASK_CACHE:-$HOME/.cache/codetask}
K8S_BIN=$CACHE_DIR/k8s-$K8S_VERSION
CLUSTER_DIR=${CLUSTER_DIR:-$REPO_ROOT/.cluster}
LOG_DIR=$CLUSTER_DIR/logs
NODE_NAME=codetask-node
SERVICE_CIDR=10.0.0.0/24
SERVICE_IP=10.0.0.1
POD_CIDR=10.88.0.0/16

log() { printf '[cluster] %s\n' "$*" >&2; }

# die STEP LOGFILE MESSAGE: stop with the step that failed and the log to read.
die() {
  local step=$1 logfile=$2; shift 2
  printf '[cluster] FAILED at step "%s": %s\n' "$step" "$*" >&2
  if [[ -n $logfile && -f $logfile ]]; then
    printf '[cluster] read %s; its last lines:\n' "$logfile" >&2
    tail -n 20 "$logfile" >&2 || true
  fi
  exit 1
}

# run STEP LOGFILE CMD...: run a command with its output in LOGFILE, dying with context on failure.
run() {
  local step=$1 logfile=$2; shift 2
  mkdir -p "$(dirname "$logfile")"
  if ! "$@" >>"$logfile" 2>&1; then
    die "$step" "$logfile" "command failed: $*"
  fi
}

host_ip() {
  ip -4 route get 1.1.1.1 2>/dev/null | awk '{for (i = 1; i < NF; i++) if ($i == "src") {print $(i + 1); exit}}'
}

# Machine-wide runtime state: one local cluster per machine, whichever checkout started it.
STATE=${CODETASK_CLUSTER_STATE:-/var/lib/codetask-cluster}
RUN_DIR=/run/codetask
CTR_SOCK=$RUN_DIR/containerd/containerd.sock
PKI=$STATE/pki
PIDS=$STATE/pids
LOGS=$STATE/logs
KUBELET_DIR=$STATE/kubelet
ETCD_PORT=12379
API_PORT=6443
ADMIN_KUBECONFIG=$STATE/admin.kubeconfig
CNI_NAME=codetask
CNI_BRIDGE=cni-codetask0

kubectl_admin() { "$K8S_BIN/kubectl" --kubeconfig "$ADMIN_KUBECONFIG" "$@"; }
ctr_k8s() { ctr --address "$CTR_SOCK" -n k8s.io "$@"; }

# component_pid NAME: the PID in NAME's PID file, printed only while that process is still NAME.
# A PID file can outlive its process (a session's processes are killed without local-down.sh) and
# its number be reused: trusting it alone once made local-down.sh kill a CI run's own `make`.
component_pid() {
  local pid exe
  [[ -f $PIDS/$1.pid ]] || return 1
  pid=$(<"$PIDS/$1.pid")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  exe=${exe% (deleted)}
  [[ ${exe##*/} == "$1" ]] || return 1
  echo "$pid"
}
pid_alive() { component_pid "$1" >/dev/null; }

# wait_for STEP LOGFILE SECONDS CMD...: poll CMD until it succeeds or die.
wait_for() {
  local step=$1 logfile=$2 secs=$3; shift 3
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= end)); then die "$step" "$logfile" "not ready after ${secs}s"; fi
    sleep 0.5
  done
}

# hold_up_lock: one local-up/local-down at a time on this machine (several test sessions may start
# at once); the lock is inherited by local-down when local-up runs it.
hold_up_lock() {
  [[ ${CODETASK_UP_LOCK_HELD:-} == 1 ]] && return 0
  exec 7>>/tmp/codetask-cluster-up.lock
  flock -x 7
  export CODETASK_UP_LOCK_HELD=1
}
