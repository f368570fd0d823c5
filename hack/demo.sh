#!/usr/bin/env bash
# make demo: the operator installed by Helm in the cluster, one sample task, its result.
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/cluster/lib.sh
export KUBECONFIG=$CLUSTER_DIR/kubeconfig
PATH=$(hack/tools.sh):$PATH
[[ -x $K8S_BIN/kubectl ]] && PATH=$K8S_BIN:$PATH
export PATH
backend=$(cat "$CLUSTER_DIR/backend")
OPERATOR_IMAGE=${OPERATOR_IMAGE:-codetask-operator:dev}
RUNNER_IMAGE=${RUNNER_IMAGE:-codetask-runner:dev}

values=()
if [[ $backend == local ]]; then
  # No registry and no cluster DNS: images are preloaded, pods resolve through the node.
  values=(--set image.pullPolicy=Never --set runner.imagePullPolicy=Never --set runner.dnsPolicy=Default)
fi
# Helm installs a chart's CRDs on its first install only: apply them so an upgrade gets new fields.
kubectl apply -f charts/codetask-operator/crds/ >/dev/null
log "installing the operator with Helm (release codetask-operator, namespace codetask-system)"
helm upgrade --install codetask-operator charts/codetask-operator -n codetask-system --create-namespace \
  --set image.repository="${OPERATOR_IMAGE%:*}" --set image.tag="${OPERATOR_IMAGE##*:}" \
  --set runner.image="$RUNNER_IMAGE" "${values[@]}" --wait --timeout 180s >/dev/null
kubectl -n codetask-system rollout status deploy/codetask-operator --timeout=120s

log "running samples/hello-python.yaml"
kubectl delete -f samples/hello-python.yaml --ignore-not-found --wait >/dev/null
kubectl apply -f samples/hello-python.yaml
kubectl wait --for=condition=Finished ct/hello-python --timeout=120s >/dev/null
echo
kubectl get ct hello-python -o wide
echo
echo "stdout of hello-python:"
kubectl get ct hello-python -o jsonpath='{.status.stdout}'
[[ $(kubectl get ct hello-python -o jsonpath='{.status.phase}') == Succeeded ]]
