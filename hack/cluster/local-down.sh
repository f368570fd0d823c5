#!/usr/bin/env bash
# Stop exactly what local-up.sh started (PID files), unmount its mounts, remove its network state;
# node 2 (node2.sh down) first when there is one.
# Keeps the binary cache. With --quiet, says nothing when there is nothing to stop.
source "$(dirname "$0")/lib.sh"
quiet=${1:-}
hold_up_lock

say() { [[ $quiet == --quiet ]] || log "$@"; }

stop() {
  local name=$1 pidfile=$PIDS/$1.pid pid
  [[ -f $pidfile ]] || return 0
  if pid=$(component_pid "$name"); then
    say "stopping $name (pid $pid)"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do pid_alive "$name" || break; sleep 0.25; done
    if pid_alive "$name"; then kill -9 "$pid" 2>/dev/null || true; fi
  fi
  rm -f "$pidfile"
}

# Node 2 first (hack/cluster/node2.sh): it cannot outlive node 1's control plane and state.
"$(dirname "$0")/node2.sh" down "$quiet"

stop kubelet
stop kube-proxy
# Containers outlive the kubelet (their shims are separate processes): remove them through containerd.
if pid_alive containerd; then
  for task in $(ctr_k8s tasks ls -q 2>/dev/null); do
    ctr_k8s tasks kill -s SIGKILL "$task" >/dev/null 2>&1 || true
  done
  sleep 0.5
  for task in $(ctr_k8s tasks ls -q 2>/dev/null); do ctr_k8s tasks delete -f "$task" >/dev/null 2>&1 || true; done
  for c in $(ctr_k8s containers ls -q 2>/dev/null); do ctr_k8s containers delete "$c" >/dev/null 2>&1 || true; done
fi
stop kube-scheduler
stop kube-controller-manager
stop kube-apiserver
stop etcd
stop containerd
# Shims of our containerd that survived it.
for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $CTR_SOCK" 2>/dev/null); do
  kill -9 "$pid" 2>/dev/null || true
done

# Mounts under our kubelet dir and containerd state (the kubelet bind-mounts its root onto itself).
for dir in "$KUBELET_DIR" "$RUN_DIR" "$STATE/containerd"; do
  findmnt -rn -o TARGET | grep -F "$dir" | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done || true
done

# Pod network namespaces, IPAM leases and the bridge made by the CNI plugins for our network.
for ns in $(ip netns list 2>/dev/null | awk '/^cni-/{print $1}'); do
  if [[ -d /var/lib/cni/networks/$CNI_NAME ]]; then ip netns delete "$ns" 2>/dev/null || true; fi
done
rm -rf "/var/lib/cni/networks/$CNI_NAME" /var/lib/cni/results/"$CNI_NAME"-*
ip link delete "$CNI_BRIDGE" 2>/dev/null || true
ip route del $SERVICE_CIDR 2>/dev/null || true

# iptables chains of kube-proxy (KUBE-*) and of the CNI plugins (CNI-*), and the rules that jump to them.
if [[ -x $K8S_BIN/kube-proxy ]] && iptables -t nat -S 2>/dev/null | grep -q 'KUBE-'; then
  "$K8S_BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
fi
# A fresh machine may not have iptables yet (local-up.sh installs it): nothing to clean then.
if command -v iptables >/dev/null; then
  for table in nat filter mangle; do
    iptables -t "$table" -S 2>/dev/null | grep -E '^-A .*-j (KUBE|CNI)-' | grep -vE '^-A (KUBE|CNI)-' \
      | while read -r rule; do eval "iptables -t $table -D ${rule#-A }" 2>/dev/null || true; done || true
    chains=$(iptables -t "$table" -S 2>/dev/null | awk '$1=="-N" && $2 ~ /^(KUBE|CNI)-/ {print $2}')
    for chain in $chains; do iptables -t "$table" -F "$chain" 2>/dev/null || true; done
    for chain in $chains; do iptables -t "$table" -X "$chain" 2>/dev/null || true; done
  done
fi

# Runtime state; certificates and the binary cache stay.
rm -rf "$STATE/etcd" "$STATE/containerd" "$RUN_DIR" "$KUBELET_DIR" "$PIDS" "$LOGS.prev"
[[ -d $LOGS ]] && mv "$LOGS" "$LOGS.prev"
rm -rf /var/lib/kubelet/pki /var/lib/kubelet/device-plugins /var/lib/kubelet/plugins_registry 2>/dev/null || true
say "local cluster stopped"
