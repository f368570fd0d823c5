#!/usr/bin/env bash
# Bring up the local single-node cluster (idempotent): containerd, etcd, control plane, kubelet, kube-proxy.
source "$(dirname "$0")/lib.sh"

# A component being restarted on purpose (hack/cluster/restart.sh, the fault tests) holds this lock
# exclusively: wait for it rather than take the cluster for half-running and wipe it.
# CODETASK_DISRUPT_LOCK_HELD=1: the caller holds it (a fault test's own session), do not wait for it.
if [[ ${CODETASK_DISRUPT_LOCK_HELD:-} != 1 ]]; then
  exec 8>>/tmp/codetask-cluster-disrupt.lock
  flock -s 8
  exec 8>&-
fi
hold_up_lock
running() {
  pid_alive kube-apiserver && pid_alive kubelet && pid_alive kube-proxy \
    && kubectl_admin get --raw=/readyz >/dev/null 2>&1
}
if running; then
  log "local cluster already running"
  exit 0
fi
if pid_alive etcd && pid_alive kube-apiserver; then
  # Running but not ready (busy, or restarting): give it a minute before starting over.
  for _ in $(seq 60); do
    sleep 1
    if running; then
      log "local cluster already running"
      exit 0
    fi
  done
fi

# Anything half-running from an earlier run is stopped and its state wiped: every run starts fresh.
"$(dirname "$0")/local-down.sh" --quiet

# A failure below stops what was started, so nothing is left half-running.
trap 'status=$?; if ((status != 0)); then "$REPO_ROOT/hack/cluster/local-down.sh" --quiet; fi' EXIT

"$(dirname "$0")/deps.sh"
"$(dirname "$0")/build-k8s.sh"

hip=$(host_ip)
[[ -n $hip ]] || die "find host IP" "" "no IPv4 default route; the API server needs a host address"
mkdir -p "$STATE" "$PIDS" "$LOGS" "$KUBELET_DIR" "$RUN_DIR" "$STATE/cni/net.d"
"$(dirname "$0")/certs.sh" "$hip"

for port in $ETCD_PORT $API_PORT 10250 10249 10256 10257 10259; do
  if ss -Hltn "sport = :$port" | grep -q .; then
    die "check ports" "" "port $port is already in use: $(ss -Hltnp "sport = :$port" | head -n 1)"
  fi
done

# start NAME CMD...: run a component in the background with its log and PID file.
start() {
  local name=$1; shift
  log "starting $name (log: $LOGS/$name.log)"
  setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null 7>&- &
  echo $! >"$PIDS/$name.pid"
}
alive_or_die() { running_or_die "start $1" "$LOGS/$1.log" pid_alive "$1"; }

# --- containerd (own root, state and socket; CNI from Debian's plugins) ---
cat >"$STATE/cni/net.d/10-codetask.conflist" <<JSON
{"cniVersion": "0.4.0", "name": "$CNI_NAME", "plugins": [
  {"type": "bridge", "bridge": "$CNI_BRIDGE", "isGateway": true, "ipMasq": true, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
JSON
cat >"$STATE/containerd.toml" <<TOML
version = 2
root = "$STATE/containerd"
state = "$RUN_DIR/containerd"
[grpc]
  address = "$CTR_SOCK"
[ttrpc]
  address = "$CTR_SOCK.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "docker.io/local/pause:3.4"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni/net.d"
TOML
start containerd containerd --config "$STATE/containerd.toml"
wait_for "start containerd" "$LOGS/containerd.log" 30 ctr --address "$CTR_SOCK" version
"$REPO_ROOT/hack/cluster/load-image.sh" pause "$REPO_ROOT/hack/images/pause.Dockerfile" "$K8S_BIN" docker.io/local/pause:3.4

# --- etcd ---
start etcd etcd --name codetask --data-dir "$STATE/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls http://127.0.0.1:12380 --initial-advertise-peer-urls http://127.0.0.1:12380 \
  --initial-cluster codetask=http://127.0.0.1:12380 --listen-metrics-urls http://127.0.0.1:12381
wait_for "start etcd" "$LOGS/etcd.log" 30 curl -fsS "http://127.0.0.1:$ETCD_PORT/health"

# --- control plane ---
start kube-apiserver "$K8S_BIN/kube-apiserver" \
  --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
  --bind-address=0.0.0.0 --secure-port=$API_PORT --advertise-address="$hip" \
  --service-cluster-ip-range=$SERVICE_CIDR --authorization-mode=Node,RBAC \
  --client-ca-file="$PKI/ca.crt" --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
  --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
  --kubelet-certificate-authority="$PKI/ca.crt" --kubelet-preferred-address-types=InternalIP \
  --service-account-issuer=https://kubernetes.default.svc --service-account-key-file="$PKI/sa.pub" \
  --service-account-signing-key-file="$PKI/sa.key" --api-audiences=https://kubernetes.default.svc \
  --enable-admission-plugins=NodeRestriction --allow-privileged=false \
  --audit-policy-file="$REPO_ROOT/hack/cluster/audit-policy.yaml" --audit-log-path="$LOGS/audit.log" \
  --audit-log-maxsize=200 --audit-log-maxbackup=1 \
  --profiling=false --v=1
wait_for "start kube-apiserver" "$LOGS/kube-apiserver.log" 90 kubectl_admin get --raw=/readyz

start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
  --kubeconfig="$STATE/controller-manager.kubeconfig" --authentication-kubeconfig="$STATE/controller-manager.kubeconfig" \
  --authorization-kubeconfig="$STATE/controller-manager.kubeconfig" \
  --use-service-account-credentials=true --service-account-private-key-file="$PKI/sa.key" \
  --root-ca-file="$PKI/ca.crt" --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
  --leader-elect=false --bind-address=127.0.0.1 --v=1
start kube-scheduler "$K8S_BIN/kube-scheduler" --kubeconfig="$STATE/scheduler.kubeconfig" \
  --authentication-kubeconfig="$STATE/scheduler.kubeconfig" --authorization-kubeconfig="$STATE/scheduler.kubeconfig" \
  --leader-elect=false --bind-address=127.0.0.1 --v=1

# --- node: kubelet and kube-proxy ---
cat >"$STATE/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failSwapOn: false
address: 0.0.0.0
tlsCertFile: $PKI/node.crt
tlsPrivateKeyFile: $PKI/node.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
podPidsLimit: 1024
maxPods: 250
serializeImagePulls: false
evictionHard: {memory.available: "200Mi", nodefs.available: "1%", imagefs.available: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
YAML
kubelet_started=$(date +%s)
start kubelet "$K8S_BIN/kubelet" --config="$STATE/kubelet.yaml" --kubeconfig="$STATE/kubelet.kubeconfig" \
  --container-runtime=remote --container-runtime-endpoint="unix://$CTR_SOCK" \
  --hostname-override=$NODE_NAME --node-ip="$hip" --root-dir="$KUBELET_DIR" --v=1
start kube-proxy "$K8S_BIN/kube-proxy" --kubeconfig="$STATE/kube-proxy.kubeconfig" \
  --cluster-cidr=$POD_CIDR --hostname-override=$NODE_NAME --conntrack-max-per-core=0 \
  --proxy-mode=iptables --metrics-bind-address=127.0.0.1:10249 --v=1

# Never let an unproxied Service IP leave the machine: route the range onto the pod bridge (made
# here before the CNI plugin, which reuses it), where what kube-proxy did not translate finds no
# one. (A blackhole route would also break host processes — the API server calling a webhook
# Service — because connect() fails before the OUTPUT DNAT.)
ip link add "$CNI_BRIDGE" type bridge 2>/dev/null || true
ip link set "$CNI_BRIDGE" up
ip route replace $SERVICE_CIDR dev "$CNI_BRIDGE"

for c in containerd etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy; do
  alive_or_die "$c"
done
wait_for "node Ready" "$LOGS/kubelet.log" 90 node_ready "$NODE_NAME" "$kubelet_started"
wait_for "service account token" "$LOGS/kube-controller-manager.log" 60 \
  kubectl_admin -n default get secret -o name --field-selector type=kubernetes.io/service-account-token
proxied() { iptables -t nat -S KUBE-SERVICES 2>/dev/null | grep -q "$SERVICE_IP/32"; }
wait_for "kube-proxy rules" "$LOGS/kube-proxy.log" 60 proxied
for c in containerd etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy; do
  alive_or_die "$c"
done
trap - EXIT
log "local cluster ready: node $NODE_NAME, API https://$hip:$API_PORT"
