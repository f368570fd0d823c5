#!/usr/bin/env bash
# Install the Debian packages the local cluster needs (idempotent; root).
source "$(dirname "$0")/lib.sh"

PACKAGES=(etcd-server containerd runc containernetworking-plugins iptables conntrack
  debootstrap openssl jq rsync golang-go golang-github-modern-go-reflect2-dev gcc libc6-dev
  dpkg-dev curl iproute2 redis-server)
logfile=$CACHE_DIR/logs/deps.log
mkdir -p "$CACHE_DIR/logs"

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]} (log: $logfile)"
  run "apt-get update" "$logfile" apt-get update
  run "apt-get install" "$logfile" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends "${missing[@]}"
fi
# The packaged services must not run on their own: the cluster starts its own instances.
for svc in containerd etcd redis-server; do
  if systemctl is-active --quiet "$svc" 2>/dev/null; then systemctl stop "$svc" || true; fi
done
