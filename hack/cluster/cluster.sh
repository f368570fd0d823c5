#!/usr/bin/env bash
# cluster.sh up|down|status|images: the project's cluster, whatever back end this machine allows.
#   up     KUBECONFIG reachable → use it; Docker + kind (with its node image) → kind; else the local
#          cluster from Debian packages. Writes .cluster/kubeconfig and .cluster/backend.
#          NODES=2 (the Makefile's default): a second node, tainted so that only pods that tolerate
#          it run there — local: hack/cluster/node2.sh (a network namespace, NODE2.md); kind: a
#          worker node (only when kind creates the cluster).
#   down   stops what `up` made (nothing for an external cluster).
#   images builds the runner and operator images and loads them into the cluster.
source "$(dirname "$0")/lib.sh"
cmd=${1:-up}
mkdir -p "$CLUSTER_DIR"

reachable() { "$(kubectl_bin)" --kubeconfig "$1" --request-timeout=5s get --raw=/readyz >/dev/null 2>&1; }
kubectl_bin() { if [[ -x $K8S_BIN/kubectl ]]; then echo "$K8S_BIN/kubectl"; else command -v kubectl; fi; }
kind_usable() {
  command -v kind >/dev/null && docker info >/dev/null 2>&1 \
    && docker image inspect "${KIND_NODE_IMAGE:-kindest/node:v1.29.2}" >/dev/null 2>&1
}

nodes=${NODES:-1}
[[ $nodes == 1 || $nodes == 2 ]] || die "check NODES" "" "NODES=$nodes: 1 or 2 nodes are supported"

up() {
  if [[ -n ${KUBECONFIG:-} && $KUBECONFIG != "$CLUSTER_DIR/kubeconfig" ]] && reachable "$KUBECONFIG"; then
    log "using the cluster KUBECONFIG points at ($KUBECONFIG); creating nothing"
    echo external >"$CLUSTER_DIR/backend"
    cp "$KUBECONFIG" "$CLUSTER_DIR/kubeconfig"
  elif kind_usable; then
    echo kind >"$CLUSTER_DIR/backend"
    local kind_config=()
    if [[ $nodes == 2 ]]; then
      printf '%s\n' 'kind: Cluster' 'apiVersion: kind.x-k8s.io/v1alpha4' 'nodes:' \
        '- role: control-plane' '- role: worker' >"$CLUSTER_DIR/kind-config.yaml"
      kind_config=(--config "$CLUSTER_DIR/kind-config.yaml")
    fi
    # An existing kind cluster keeps the nodes it was made with (untested with NODES=2).
    kind get clusters 2>/dev/null | grep -qx codetask \
      || kind create cluster --name codetask --image "${KIND_NODE_IMAGE:-kindest/node:v1.29.2}" "${kind_config[@]}"
    kind get kubeconfig --name codetask >"$CLUSTER_DIR/kubeconfig"
  else
    echo local >"$CLUSTER_DIR/backend"
    "$REPO_ROOT/hack/cluster/local-up.sh"
    if [[ $nodes == 2 ]]; then
      "$REPO_ROOT/hack/cluster/node2.sh" up
    elif [[ -d $N2_STATE ]]; then
      # The cluster is machine-wide: another session may have added node 2. Leave it.
      log "node 2 ($N2_NAME) exists on this machine's cluster (NODES=2 elsewhere): left as it is"
    fi
    cp "$ADMIN_KUBECONFIG" "$CLUSTER_DIR/kubeconfig"
  fi
  chmod 600 "$CLUSTER_DIR/kubeconfig"
  log "kubeconfig: $CLUSTER_DIR/kubeconfig"
}

down() {
  case $(cat "$CLUSTER_DIR/backend" 2>/dev/null || echo local) in
    kind) kind delete cluster --name codetask ;;
    external) log "external cluster: nothing to stop" ;;
    local) "$REPO_ROOT/hack/cluster/local-down.sh" ;;
  esac
  rm -f "$CLUSTER_DIR/kubeconfig" "$CLUSTER_DIR/backend"
}

images() {
  "$REPO_ROOT/hack/cluster/load-image.sh" runner "$REPO_ROOT/runner-image/Dockerfile" \
    "$REPO_ROOT/runner-image" "${RUNNER_IMAGE:-codetask-runner:dev}"
  "$REPO_ROOT/hack/cluster/load-image.sh" agent "$REPO_ROOT/runner-image/agent.Dockerfile" "$REPO_ROOT/runner-image" "${AGENT_IMAGE:-codetask-agent:dev}"
  "$REPO_ROOT/hack/cluster/load-image.sh" operator "$REPO_ROOT/operator/Dockerfile" \
    "$REPO_ROOT" "${OPERATOR_IMAGE:-codetask-operator:dev}"
  "$REPO_ROOT/hack/cluster/load-image.sh" redis "$REPO_ROOT/hack/images/redis.Dockerfile" \
    "$REPO_ROOT/hack/images" "${REDIS_IMAGE:-codetask-redis:dev}"
}

# Exit 0 when a cluster is up: the one .cluster/kubeconfig names, or this machine's local one.
status() {
  if [[ -f $CLUSTER_DIR/kubeconfig ]] && reachable "$CLUSTER_DIR/kubeconfig"; then return 0; fi
  [[ -f $ADMIN_KUBECONFIG ]] && pid_alive kube-apiserver && reachable "$ADMIN_KUBECONFIG"
}

case $cmd in
  status) status ;;
  up) up ;;
  down) down ;;
  images) images ;;
  *) echo "usage: $0 up|down|status|images" >&2; exit 2 ;;
esac
