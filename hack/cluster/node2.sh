#!/usr/bin/env bash
# node2.sh COMMAND: a second node of the local cluster, in network and mount namespaces of its own.
#
# Issue #18; hack/cluster/NODE2.md has the layout, the traffic paths and what was measured. Node 2
# is tainted codetask.dev/second-node=true:NoSchedule (and labelled so): only pods that tolerate it
# run there.
#
#   up          add node 2 to the running local cluster (idempotent; node 1 must be up): netns + veth,
#               routes, its own containerd, kubelet and kube-proxy; images copied from node 1
#   down        stop exactly what `up` started; remove the netns, veth, routes, iptables chains,
#               mounts (its mount namespace), cgroups, runtime state and the Node object
#               (certificates stay). local-down.sh runs it first. --quiet: silent when nothing to do
#   kill        node loss: cut node 2's link, then SIGKILL its kubelet, kube-proxy, containerd, shims
#               and every container process. Nothing is cleaned up: its "disk" stays as it was
#   restore     bring a killed node back as after a reboot: fresh /run and mounts, same disk, link up
#   partition   cut node 2's link only: its processes and containers keep running, unreachable
#   heal        undo partition
#   status      exit 0 when node 2's processes run and its Node is Ready
#   cordon | uncordon | drain [KUBECTL-DRAIN-ARGS]   kubectl on node 2
#   exec CMD... run CMD in node 2's network and mount namespaces (debugging: `node2.sh exec ip addr`)
#
# kill, restore, partition and heal disrupt everyone's cluster on this machine: they hold the
# disruption lock (/tmp/codetask-cluster-disrupt.lock) exclusively like restart.sh, unless
# CODETASK_DISRUPT_LOCK_HELD=1 says the caller (tests/chaos/disrupt.py) holds it. A test that kills
# and restores should hold it across both. `up` waits for it (shared), as local-up.sh does, so that a
# node killed on purpose is not taken for a broken one and wiped.
#
# Why a mount namespace too (not only `ip netns`): the kubelet hard-codes /var/log/pods,
# /var/log/containers and /var/lib/kubelet/{device-plugins,plugins_registry}, and its log GC deletes
# every /var/log/pods/<pod> directory whose pod it does not know (kuberuntime_gc.go
# evictPodLogsDirectories + IsPodDeleted): two kubelets sharing /var/log/pods delete each other's
# pod logs. Node 2's kubelet and containerd therefore share one persistent mount namespace
# ($N2_RUN/ns/mnt) where those paths (and /var/lib/cni, /run/containerd) are node 2's own
# directories. Everything node 2 mounts (volumes, rootfs, pod netns) lives in that namespace only:
# dropping it is how `down` and `restore` unmount all of it. Processes are started with
# `nsenter --net --mount`, not `ip netns exec` (which would make a separate mount namespace per
# process, so containerd would not see the kubelet's volume mounts, and would remount /sys, losing
# /sys/fs/cgroup).
source "$(dirname "$0")/lib.sh"
HERE=$(cd "$(dirname "$0")" && pwd)

NETNS_PATH=/run/netns/$N2_NETNS
NSDIR=$N2_RUN/ns
MNTNS=$NSDIR/mnt
SETUP_LOG=$N2_LOGS/setup.log
FWD_CHAIN=CODETASK-NODE2-FWD
NAT_CHAIN=CODETASK-NODE2-NAT
DISRUPT_LOCK=/tmp/codetask-cluster-disrupt.lock
quiet=

say() { [[ $quiet == --quiet ]] || log "node 2: $*"; }

# n2net CMD: CMD in node 2's network namespace only (ip, sysctl, iptables).
n2net() { nsenter --net="$NETNS_PATH" -- "$@"; }
# n2 CMD: CMD in node 2's network and mount namespaces (where its kubelet and containerd run).
n2() { nsenter --net="$NETNS_PATH" --mount="$MNTNS" -- "$@"; }

netns_exists() { [[ -e $NETNS_PATH ]]; }
mntns_exists() { mountpoint -q "$MNTNS" 2>/dev/null; }

disrupt_lock_exclusive() {
  [[ ${CODETASK_DISRUPT_LOCK_HELD:-} == 1 ]] && return 0
  exec 9>>"$DISRUPT_LOCK"
  log "waiting for $DISRUPT_LOCK"
  flock -x 9
}
disrupt_lock_wait_shared() {
  [[ ${CODETASK_DISRUPT_LOCK_HELD:-} == 1 ]] && return 0
  exec 8>>"$DISRUPT_LOCK"
  flock -s 8
  exec 8>&-
}

api_ready() { kubectl_admin get --raw=/readyz >/dev/null 2>&1; }
# kubelet_answers: any HTTP answer from node 2's kubelet at its InternalIP (401 without
# credentials) proves the path the API server takes for logs and exec; 000 is no connection.
kubelet_answers() {
  [[ $(curl -sk -o /dev/null -w '%{http_code}' --max-time 5 "https://$N2_IP:10250/healthz" || true) != 000 ]]
}

# ---------------------------------------------------------------------------------------------------
# cgroups. The kubelet's cgroupRoot is /codetask-node2 (node 1's pods are under /kubepods): cgroups
# are NOT namespaced here, so without it both kubelets would manage the same /kubepods tree.

# cgroup_dirs: node 2's directory in every cgroup hierarchy of this machine (v1, hybrid or v2).
cgroup_dirs() {
  local m
  if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
    echo "/sys/fs/cgroup/$N2_CGROUP"
    return 0
  fi
  findmnt -rn -t cgroup,cgroup2 -o TARGET | grep '^/sys/fs/cgroup/' | while read -r m; do
    echo "$m/$N2_CGROUP"
  done
}

make_cgroups() {
  local d parent
  for d in $(cgroup_dirs); do
    mkdir -p "$d"
    parent=$(dirname "$d")
    # cgroup v1 cpuset: a new group has no CPUs or memory nodes until given its parent's.
    if [[ -f $d/cpuset.cpus && -z $(cat "$d/cpuset.cpus") ]]; then
      cat "$parent/cpuset.cpus" >"$d/cpuset.cpus"
      cat "$parent/cpuset.mems" >"$d/cpuset.mems"
    fi
    # cgroup v2 (not this machine's; not run): the kubelet wants these controllers enabled below it.
    if [[ -f /sys/fs/cgroup/cgroup.controllers && -f $d/cgroup.subtree_control ]]; then
      for c in $(cat "$d/cgroup.controllers"); do echo "+$c" >"$d/cgroup.subtree_control" 2>/dev/null || true; done
    fi
  done
}

# cgroup_procs: every PID in node 2's cgroups (its containers; the node's daemons are not in them).
cgroup_procs() {
  local d
  for d in $(cgroup_dirs); do
    [[ -d $d ]] && find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null
  done | sort -un
}

# kill_cgroup_procs: SIGKILL every process in node 2's cgroups, frozen first where a v1 freezer
# exists (so that none forks or reacts while the others die), until none is left.
kill_cgroup_procs() {
  local freezer=/sys/fs/cgroup/freezer/$N2_CGROUP end=$((SECONDS + 20)) d
  local -a pids
  for d in $(cgroup_dirs); do
    [[ -f $d/cgroup.kill ]] && echo 1 >"$d/cgroup.kill" 2>/dev/null || true   # cgroup v2 / unified
  done
  [[ -f $freezer/freezer.state ]] && { echo FROZEN >"$freezer/freezer.state" 2>/dev/null || true; }
  while mapfile -t pids < <(cgroup_procs) && ((${#pids[@]})); do
    kill -9 "${pids[@]}" 2>/dev/null || true
    [[ -f $freezer/freezer.state ]] && { echo THAWED >"$freezer/freezer.state" 2>/dev/null || true; }
    if ((SECONDS >= end)); then
      log "node 2: processes still in its cgroups after SIGKILL: ${pids[*]}"
      return 1
    fi
    sleep 0.2
  done
  [[ -f $freezer/freezer.state ]] && { echo THAWED >"$freezer/freezer.state" 2>/dev/null || true; }
  return 0
}

remove_cgroups() {
  local d
  for d in $(cgroup_dirs); do
    [[ -d $d ]] && { find "$d" -depth -type d -print0 | xargs -0 -r rmdir 2>/dev/null || true; }
  done
  return 0
}

# ---------------------------------------------------------------------------------------------------
# Network: netns codetask-node2 with a veth to the host (10.250.2.1 host, 10.250.2.2 node 2).
#   host:   10.89.0.0/16 via 10.250.2.2 (node 2's pods); FORWARD accepted on the veth in our own
#           chain; node 2's pods and link masqueraded when they leave by the external interface
#   node 2: default via 10.250.2.1 (node 1's pods, the API server at the host IP, the outside);
#           10.0.0.0/24 onto its own CNI bridge (as node 1 does: an untranslated Service IP goes
#           nowhere)
# Node 2's CNI bridge does NOT masquerade (ipMasq false), so pods see each other's real IPs across
# nodes. Node 1's bridge does (ipMasq true, unchanged): node 1 pods reach node 2 pods from 10.250.2.1.

ext_if() { ip -4 route get 1.1.1.1 2>/dev/null | awk '{for (i = 1; i < NF; i++) if ($i == "dev") {print $(i + 1); exit}}'; }

host_iptables_up() {
  local ext
  ext=$(ext_if)
  run "host iptables" "$SETUP_LOG" iptables -N "$FWD_CHAIN"
  run "host iptables" "$SETUP_LOG" iptables -A "$FWD_CHAIN" -i "$N2_VETH_HOST" -j ACCEPT
  run "host iptables" "$SETUP_LOG" iptables -A "$FWD_CHAIN" -o "$N2_VETH_HOST" -j ACCEPT
  run "host iptables" "$SETUP_LOG" iptables -I FORWARD 1 -j "$FWD_CHAIN"
  run "host iptables" "$SETUP_LOG" iptables -t nat -N "$NAT_CHAIN"
  if [[ -n $ext ]]; then
    run "host iptables" "$SETUP_LOG" iptables -t nat -A "$NAT_CHAIN" -s "$N2_POD_CIDR" -o "$ext" -j MASQUERADE
    run "host iptables" "$SETUP_LOG" iptables -t nat -A "$NAT_CHAIN" -s "$N2_LINK_CIDR" -o "$ext" -j MASQUERADE
  fi
  run "host iptables" "$SETUP_LOG" iptables -t nat -I POSTROUTING 1 -j "$NAT_CHAIN"
}

host_iptables_down() {
  command -v iptables >/dev/null || return 0
  while iptables -D FORWARD -j "$FWD_CHAIN" 2>/dev/null; do :; done
  iptables -F "$FWD_CHAIN" 2>/dev/null || true
  iptables -X "$FWD_CHAIN" 2>/dev/null || true
  while iptables -t nat -D POSTROUTING -j "$NAT_CHAIN" 2>/dev/null; do :; done
  iptables -t nat -F "$NAT_CHAIN" 2>/dev/null || true
  iptables -t nat -X "$NAT_CHAIN" 2>/dev/null || true
}

net_up() {
  run "netns" "$SETUP_LOG" ip netns add "$N2_NETNS"
  # The peer is created directly inside the netns: its name never exists in the host namespace.
  run "veth" "$SETUP_LOG" ip link add "$N2_VETH_HOST" type veth peer name "$N2_VETH_NODE" netns "$N2_NETNS"
  run "veth" "$SETUP_LOG" ip addr add "$N2_HOST_IP/$N2_LINK_PREFIX" dev "$N2_VETH_HOST"
  run "veth" "$SETUP_LOG" ip link set "$N2_VETH_HOST" up
  run "netns addresses" "$SETUP_LOG" n2net ip link set lo up
  run "netns addresses" "$SETUP_LOG" n2net ip addr add "$N2_IP/$N2_LINK_PREFIX" dev "$N2_VETH_NODE"
  run "netns addresses" "$SETUP_LOG" n2net ip link set "$N2_VETH_NODE" up
  net_routes
  run "forwarding" "$SETUP_LOG" sysctl -qw net.ipv4.ip_forward=1
  run "forwarding" "$SETUP_LOG" n2net sysctl -qw net.ipv4.ip_forward=1
  # kube-proxy needs bridged pod traffic to go through iptables inside node 2 (per-netns on recent
  # kernels; needs br_netfilter loaded, as it is for node 1).
  n2net sysctl -qw net.bridge.bridge-nf-call-iptables=1 >>"$SETUP_LOG" 2>&1 \
    || log "node 2: WARNING could not set net.bridge.bridge-nf-call-iptables=1 in its netns (Service hairpin may fail)"
  host_iptables_up
  # Node 2's pod bridge made before the CNI plugin (which reuses it), and the Service range routed
  # onto it, as local-up.sh does for node 1.
  run "netns bridge" "$SETUP_LOG" n2net ip link add "$N2_CNI_BRIDGE" type bridge
  run "netns bridge" "$SETUP_LOG" n2net ip link set "$N2_CNI_BRIDGE" up
  run "netns bridge" "$SETUP_LOG" n2net ip route replace "$SERVICE_CIDR" dev "$N2_CNI_BRIDGE"
}

# net_routes: the routes a link down/up loses (the host's route through the veth goes with it).
net_routes() {
  run "routes" "$SETUP_LOG" ip route replace "$N2_POD_CIDR" via "$N2_IP" dev "$N2_VETH_HOST"
  run "routes" "$SETUP_LOG" n2net ip route replace default via "$N2_HOST_IP" dev "$N2_VETH_NODE"
}

net_down() {
  host_iptables_down
  ip route del "$N2_POD_CIDR" 2>/dev/null || true
  ip link delete "$N2_VETH_HOST" 2>/dev/null || true
  ip netns delete "$N2_NETNS" 2>/dev/null || true
}

# net_cut / net_heal: the host end of the veth down / up. Down, the host loses its route to node 2's
# pods and node 2 its carrier: nothing passes either way; the processes inside notice nothing else.
net_cut() { run "cut link" "$SETUP_LOG" ip link set "$N2_VETH_HOST" down; }
net_heal() {
  run "heal link" "$SETUP_LOG" ip link set "$N2_VETH_HOST" up
  net_routes
}

# ---------------------------------------------------------------------------------------------------
# Mount namespace: node 2's own view of the paths the kubelet and containerd hard-code.

# "node-2 directory" "path it hides in node 2's mount namespace"; /run ones are wiped by `restore`.
host_paths() {
  cat <<EOF
$N2_STATE/host/var/lib/kubelet /var/lib/kubelet
$N2_STATE/host/var/log/pods /var/log/pods
$N2_STATE/host/var/log/containers /var/log/containers
$N2_STATE/host/var/lib/cni /var/lib/cni
$N2_RUN/host/run/containerd /run/containerd
EOF
}

mntns_up() {
  local src dst
  mkdir -p "$NSDIR"
  # A mount-namespace file can only be bound onto a private mount (util-linux unshare(1)).
  if ! mountpoint -q "$NSDIR"; then
    run "mount namespace" "$SETUP_LOG" mount --bind "$NSDIR" "$NSDIR"
    run "mount namespace" "$SETUP_LOG" mount --make-private "$NSDIR"
  fi
  touch "$MNTNS"
  # --propagation private: nothing mounted in node 2 shows on the host, and the reverse.
  run "mount namespace" "$SETUP_LOG" unshare --mount="$MNTNS" --propagation private true
  while read -r src dst; do
    mkdir -p "$src" "$dst"   # $dst on the host: only the (normally existing) mount point
    run "mount namespace" "$SETUP_LOG" nsenter --mount="$MNTNS" -- mount --bind "$src" "$dst"
  done < <(host_paths)
}

# mntns_down: drop node 2's mount namespace; the kernel unmounts all its mounts once no process of
# node 2 is left in it (kill them first).
mntns_down() {
  if mntns_exists; then umount "$MNTNS" 2>/dev/null || umount -l "$MNTNS" 2>/dev/null || true; fi
  if mountpoint -q "$NSDIR" 2>/dev/null; then umount -l "$NSDIR" 2>/dev/null || true; fi
}

# ---------------------------------------------------------------------------------------------------
# Configuration files (rewritten by every `up`).

write_configs() {
  mkdir -p "$N2_STATE/cni/net.d" "$N2_KUBELET_DIR" "$N2_STATE/opt"
  cat >"$N2_STATE/cni/net.d/10-codetask-node2.conflist" <<JSON
{"cniVersion": "0.4.0", "name": "$N2_CNI_NAME", "plugins": [
  {"type": "bridge", "bridge": "$N2_CNI_BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$N2_POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
JSON
  # netns_mounts_under_state_dir: pod network namespaces under containerd's state dir rather than
  # /run/netns, where node 1's local-down.sh deletes every cni-* namespace it finds.
  cat >"$N2_STATE/containerd.toml" <<TOML
version = 2
root = "$N2_STATE/containerd"
state = "$N2_RUN/containerd"
[grpc]
  address = "$N2_CTR_SOCK"
[ttrpc]
  address = "$N2_CTR_SOCK.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$N2_STATE/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "docker.io/local/pause:3.4"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$N2_STATE/cni/net.d"
TOML
  # Same as node 1's kubelet.yaml plus cgroupRoot. Its ports (10250, 10248) are the defaults:
  # they are in node 2's network namespace, so they do not collide with node 1's.
  cat >"$N2_STATE/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
cgroupRoot: /$N2_CGROUP
failSwapOn: false
address: 0.0.0.0
port: 10250
healthzBindAddress: 127.0.0.1
healthzPort: 10248
readOnlyPort: 0
tlsCertFile: $PKI/node2.crt
tlsPrivateKeyFile: $PKI/node2.key
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
}

# ---------------------------------------------------------------------------------------------------
# Processes.

# n2_start NAME CMD...: CMD in node 2's namespaces, in the background, with its log and PID file.
# nsenter without --pid/--fork execs CMD itself, so $! is the component's own PID.
n2_start() {
  local name=$1
  shift
  log "node 2: starting $name (log: $N2_LOGS/$name.log)"
  setsid nsenter --net="$NETNS_PATH" --mount="$MNTNS" -- "$@" >>"$N2_LOGS/$name.log" 2>&1 </dev/null 7>&- 8>&- 9>&- &
  echo $! >"$N2_PIDS/$name.pid"
}
n2_alive_or_die() { running_or_die "node 2: start $1" "$N2_LOGS/$1.log" n2_pid_alive "$1"; }

# A proxy in the environment must not carry node 2's calls to the API server (at the host's IP,
# not loopback as for node 1) or to pods and Services.
no_proxy_for_node2() {
  local hip=$1
  if [[ -n ${HTTPS_PROXY:-}${https_proxy:-}${HTTP_PROXY:-}${http_proxy:-} ]]; then
    export NO_PROXY="${NO_PROXY:+$NO_PROXY,}$hip,$N2_HOST_IP,$N2_IP,$SERVICE_CIDR,$CLUSTER_CIDR,$N2_LINK_CIDR"
    export no_proxy=$NO_PROXY
  fi
}

# sync_images: copy into node 2's containerd every image of node 1 it lacks (same name and digest),
# one at a time (an export is as large as the image). load-image.sh loads new images into both.
sync_images() {
  local ref digest tmp=$N2_STATE/image-sync.tar
  local -A have=()
  while read -r ref digest; do have[$ref]=$digest; done < <(ctr_n2 images ls 2>/dev/null | awk 'NR > 1 {print $1, $3}')
  while read -r ref digest; do
    [[ $ref == sha256:* || ${have[$ref]:-} == "$digest" ]] && continue
    log "node 2: copying image $ref from node 1"
    run "copy image $ref" "$SETUP_LOG" ctr_k8s images export "$tmp" "$ref"
    run "copy image $ref" "$SETUP_LOG" ctr_n2 images import "$tmp"
    rm -f "$tmp"
  done < <(ctr_k8s images ls 2>/dev/null | awk 'NR > 1 {print $1, $3}')
}

# start_node HOST_IP: containerd, images, kubelet, kube-proxy; then wait for Ready and the rules.
start_node() {
  local hip=$1
  mkdir -p "$N2_PIDS" "$N2_LOGS" "$N2_RUN/containerd"
  n2_start containerd containerd --config "$N2_STATE/containerd.toml"
  wait_for "node 2: start containerd" "$N2_LOGS/containerd.log" 30 ctr --address "$N2_CTR_SOCK" version
  sync_images
  # (grep without -q: with pipefail, -q's early exit can fail the pipeline through ctr's SIGPIPE)
  ctr_n2 images ls -q 2>/dev/null | grep -x docker.io/local/pause:3.4 >/dev/null \
    || die "node 2: images" "$SETUP_LOG" "no pause image in node 2's containerd (is it in node 1's?)"

  local started
  started=$(date +%s)
  n2_start kubelet "$K8S_BIN/kubelet" --config="$N2_STATE/kubelet.yaml" \
    --kubeconfig="$STATE/node2-kubelet.kubeconfig" \
    --container-runtime=remote --container-runtime-endpoint="unix://$N2_CTR_SOCK" \
    --hostname-override="$N2_NAME" --node-ip="$N2_IP" \
    --register-with-taints="$N2_TAINT=true:NoSchedule" --node-labels="$N2_TAINT=true" \
    --root-dir="$N2_KUBELET_DIR" --cert-dir="$N2_KUBELET_DIR/pki" --v=1
  # --conntrack-*=0: kube-proxy leaves the conntrack sysctls alone (node 1's kube-proxy, in the host
  # namespace, sets what it sets; --conntrack-max-per-core=0 as for node 1).
  n2_start kube-proxy "$K8S_BIN/kube-proxy" --kubeconfig="$STATE/node2-kube-proxy.kubeconfig" \
    --cluster-cidr="$CLUSTER_CIDR" --hostname-override="$N2_NAME" --bind-address="$N2_IP" \
    --conntrack-max-per-core=0 --conntrack-tcp-timeout-established=0 --conntrack-tcp-timeout-close-wait=0 \
    --proxy-mode=iptables --metrics-bind-address=127.0.0.1:10249 --healthz-bind-address=0.0.0.0:10256 --v=1

  for c in containerd kubelet kube-proxy; do n2_alive_or_die "$c"; done
  wait_for "node 2: node Ready" "$N2_LOGS/kubelet.log" 90 node_ready "$N2_NAME" "$started"
  proxied() { n2net iptables -t nat -S KUBE-SERVICES 2>/dev/null | grep "$SERVICE_IP/32" >/dev/null; }
  wait_for "node 2: kube-proxy rules" "$N2_LOGS/kube-proxy.log" 60 proxied
  wait_for "node 2: host -> kubelet (https://$N2_IP:10250)" "$N2_LOGS/kubelet.log" 30 kubelet_answers
  for c in containerd kubelet kube-proxy; do n2_alive_or_die "$c"; done
}

# kill_processes SIGNAL: the node's daemons (PID files), containerd's shims (by socket) and every
# container process (cgroups).
kill_processes() {
  local sig=$1 c pid
  for c in kubelet kube-proxy containerd; do
    n2_pid_alive "$c" || continue
    pid=$(cat "$N2_PIDS/$c.pid")
    kill -s "$sig" "$pid" 2>/dev/null || true
  done
  for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $N2_CTR_SOCK" 2>/dev/null); do
    kill -9 "$pid" 2>/dev/null || true
  done
  kill_cgroup_procs || true
}

# stop_gracefully: as local-down.sh does for node 1 (kubelet and kube-proxy stopped, containers
# removed through containerd, containerd stopped), then whatever is left is killed.
stop_gracefully() {
  local c pid
  for c in kubelet kube-proxy; do
    n2_pid_alive "$c" || continue
    pid=$(cat "$N2_PIDS/$c.pid")
    say "stopping $c (pid $pid)"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  done
  if n2_pid_alive containerd; then
    for task in $(ctr_n2 tasks ls -q 2>/dev/null); do ctr_n2 tasks kill -s SIGKILL "$task" >/dev/null 2>&1 || true; done
    sleep 0.5
    for task in $(ctr_n2 tasks ls -q 2>/dev/null); do ctr_n2 tasks delete -f "$task" >/dev/null 2>&1 || true; done
    for c in $(ctr_n2 containers ls -q 2>/dev/null); do ctr_n2 containers delete "$c" >/dev/null 2>&1 || true; done
    pid=$(cat "$N2_PIDS/containerd.pid")
    say "stopping containerd (pid $pid)"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  fi
  kill_processes KILL
}

all_running() {
  netns_exists && n2_pid_alive containerd && n2_pid_alive kubelet && n2_pid_alive kube-proxy && node_ready "$N2_NAME"
}

# ---------------------------------------------------------------------------------------------------
# Commands.

cmd_up() {
  disrupt_lock_wait_shared
  hold_up_lock
  if all_running; then
    log "node 2 already running"
    return 0
  fi
  pid_alive kube-apiserver && api_ready || die "node 2: up" "" "node 1's control plane is not running: make cluster first"
  cmd_down --quiet
  trap 'status=$?; if ((status != 0)); then "$HERE/node2.sh" down --quiet; fi' EXIT

  local hip
  hip=$(host_ip)
  [[ -n $hip ]] || die "node 2: find host IP" "" "no IPv4 default route"
  no_proxy_for_node2 "$hip"
  mkdir -p "$N2_STATE" "$N2_PIDS" "$N2_LOGS" "$N2_RUN"
  "$HERE/certs.sh" "$hip" --node2
  make_cgroups
  net_up
  # A TLS-verified request from inside node 2 to the API server at the host's IP (a bare TCP connect
  # proves nothing on this VM: a proxy answers on 443 for almost any address).
  wait_for "node 2: reach the API server from its netns" "$SETUP_LOG" 10 \
    n2net curl -fsS --max-time 3 --cacert "$PKI/ca.crt" "https://$hip:$API_PORT/version"
  mntns_up
  write_configs
  start_node "$hip"
  trap - EXIT
  log "node 2 ready: $N2_NAME at $N2_IP, pods $N2_POD_CIDR (netns $N2_NETNS)"
}

cmd_down() {
  quiet=${1:-}
  hold_up_lock
  # Nothing of node 2 here: say nothing (local-down.sh calls this every time).
  if ! netns_exists && [[ ! -d $N2_STATE && ! -d $N2_RUN ]]; then return 0; fi
  say "stopping"
  stop_gracefully
  mntns_down
  net_down
  remove_cgroups
  # Its Node object (and so, through the pod GC, the pods bound to it) goes with it.
  if api_ready && kubectl_admin get node "$N2_NAME" >/dev/null 2>&1; then
    kubectl_admin delete node "$N2_NAME" --wait=false >/dev/null 2>&1 || true
  fi
  # Host-namespace mounts under node 2's directories (none expected: they live in its mount
  # namespace), then its runtime state; certificates and kubeconfigs in $PKI/$STATE stay.
  for dir in "$N2_STATE" "$N2_RUN"; do
    findmnt -rn -o TARGET | grep -F "$dir" | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done || true
  done
  rm -rf "$N2_RUN" "$N2_STATE"
  if [[ -d $N2_LOGS ]]; then rm -rf "$N2_LOGS.prev" && mv "$N2_LOGS" "$N2_LOGS.prev"; fi
  say "stopped"
}

cmd_kill() {
  disrupt_lock_exclusive
  hold_up_lock
  netns_exists || die "node 2: kill" "" "node 2 is not set up"
  # The link first: from this moment nothing node 2 does reaches the cluster (no last status update).
  net_cut
  kill_processes KILL
  log "node 2 killed: link $N2_VETH_HOST down, kubelet, kube-proxy, containerd, shims and containers SIGKILLed"
}

cmd_restore() {
  disrupt_lock_exclusive
  hold_up_lock
  netns_exists && [[ -f $N2_STATE/kubelet.yaml ]] || die "node 2: restore" "" "node 2 is not set up: node2.sh up"
  local hip
  hip=$(host_ip)
  no_proxy_for_node2 "$hip"
  # As after a reboot: no process, no mount, an empty /run; the disk ($N2_STATE) as it was.
  kill_processes KILL
  mntns_down
  rm -rf "$N2_RUN/containerd" "$N2_RUN/host"
  rm -f "$N2_PIDS"/*.pid
  make_cgroups
  mntns_up
  net_heal
  start_node "$hip"
  log "node 2 restored"
}

cmd_partition() {
  disrupt_lock_exclusive
  netns_exists || die "node 2: partition" "" "node 2 is not set up"
  net_cut
  log "node 2 partitioned: link $N2_VETH_HOST down; its processes keep running"
}

cmd_heal() {
  disrupt_lock_exclusive
  netns_exists || die "node 2: heal" "" "node 2 is not set up"
  net_heal
  log "node 2 healed: link $N2_VETH_HOST up"
}

cmd=${1:-}
shift || true
case $cmd in
  up) cmd_up ;;
  down) cmd_down "${1:-}" ;;
  kill) cmd_kill ;;
  restore) cmd_restore ;;
  partition) cmd_partition ;;
  heal) cmd_heal ;;
  status) all_running ;;
  cordon) kubectl_admin cordon "$N2_NAME" ;;
  uncordon) kubectl_admin uncordon "$N2_NAME" ;;
  drain) kubectl_admin drain "$N2_NAME" --ignore-daemonsets --delete-emptydir-data "$@" ;;
  exec)
    (($#)) || { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
    n2 "$@"
    ;;
  *)
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
