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

# node_ready NODE [EPOCH]: NODE is Ready, said by a kubelet heartbeat at or after EPOCH (default:
# any). A Node object left from before a kill or a restart still says Ready (its controller marks
# it NotReady only after 40 s): pass the new kubelet's start to wait for that kubelet's word.
node_ready() {
  local out
  out=$(kubectl_admin get node "$1" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status} {.status.conditions[?(@.type=="Ready")].lastHeartbeatTime}' 2>/dev/null) || return 1
  [[ ${out%% *} == True ]] && (($(date -d "${out#* }" +%s) >= ${2:-0}))
}
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

# running_or_die STEP LOGFILE CHECK NAME: `CHECK NAME` (pid_alive, n2_pid_alive) passes within 5 s.
# Just after `setsid CMD &` the PID may still be mid-exec (setsid's or nsenter's, its exe and cmdline
# read empty for a moment): one look can call a component that runs dead. Measured with two cores
# busy: 23 of 300 first looks at `setsid nsenter -- CMD &` failed; node 2's restore once died so
# while its kubelet went on to register.
running_or_die() {
  local step=$1 logfile=$2 check=$3 name=$4 end=$((SECONDS + 5))
  until "$check" "$name"; do
    ((SECONDS < end)) || die "$step" "$logfile" "$name is not running 5 s after its start"
    sleep 0.1
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

# --- Node 2 (hack/cluster/node2.sh, NODE2.md): a second node in network and mount namespaces of its
# own, on the same machine. Node 1 keeps every name above unchanged.
N2_NAME=codetask-node2                 # kubelet --hostname-override, Node name, cert CN suffix
N2_TAINT=codetask.dev/second-node      # node 2's taint (NoSchedule) and label: only pods that
                                       # tolerate it run there, so one-node tests stay on node 1
N2_NETNS=codetask-node2                # ip netns name: /run/netns/codetask-node2
N2_POD_CIDR=10.89.0.0/16               # node 2's CNI bridge range (node 1: POD_CIDR=10.88.0.0/16)
CLUSTER_CIDR=10.88.0.0/15              # both pod ranges: node 2's kube-proxy --cluster-cidr
N2_LINK_CIDR=10.250.2.0/30             # the veth link host <-> node 2
N2_LINK_PREFIX=30
N2_HOST_IP=10.250.2.1                  # host end of the veth (host side: ctn2-host)
N2_IP=10.250.2.2                       # node 2's end (inside the netns: ctn2-node); its InternalIP
N2_VETH_HOST=ctn2-host
N2_VETH_NODE=ctn2-node
N2_CNI_NAME=codetask-node2
N2_CNI_BRIDGE=cni-ctn2                 # inside node 2's netns (cannot collide with cni-codetask0)
N2_CGROUP=codetask-node2               # kubelet cgroupRoot: /codetask-node2/kubepods/...
N2_STATE=$STATE/node2                  # node 2's "disk": containerd root, kubelet root, pids, configs
N2_RUN=/run/codetask-node2             # node 2's "/run": containerd state and socket, namespace files
N2_CTR_SOCK=$N2_RUN/containerd/containerd.sock
N2_PIDS=$N2_STATE/pids
N2_LOGS=$LOGS/node2
N2_KUBELET_DIR=$N2_STATE/kubelet

ctr_n2() { ctr --address "$N2_CTR_SOCK" -n k8s.io "$@"; }
# n2_pid_alive NAME: node 2's NAME runs. Its command line must name node 2's files: after a `node2.sh
# kill` the PID files stay, and a PID reused by an unrelated process must not pass (or be killed).
n2_pid_alive() {
  local pid
  [[ -f $N2_PIDS/$1.pid ]] || return 1
  pid=$(cat "$N2_PIDS/$1.pid")
  kill -0 "$pid" 2>/dev/null && grep -qa node2 "/proc/$pid/cmdline" 2>/dev/null
}
# n2_runtime_up: node 2's containerd answers (images are loaded into it too).
n2_runtime_up() { n2_pid_alive containerd && ctr --address "$N2_CTR_SOCK" version >/dev/null 2>&1; }
