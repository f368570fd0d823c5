#!/usr/bin/env bash
# Build the Kubernetes binaries from Debian's source package, once; cached in $K8S_BIN.
source "$(dirname "$0")/lib.sh"

WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler cmd/kubelet cmd/kube-proxy cmd/kubectl"
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl pause)

have_all() {
  local b
  for b in "${BINARIES[@]}"; do [[ -x $K8S_BIN/$b ]] || return 1; done
}
if have_all; then
  exit 0
fi

logfile=$CACHE_DIR/logs/build-k8s.log
src_root=$CACHE_DIR/src
mkdir -p "$src_root" "$CACHE_DIR/logs"
: >"$logfile"

if ! grep -rqs '^Types:.*deb-src' /etc/apt/sources.list.d/ && ! grep -qs '^deb-src' /etc/apt/sources.list; then
  log "adding a deb-src entry for Debian's source packages"
  cat >/etc/apt/sources.list.d/codetask-deb-src.sources <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  run "apt-get update (deb-src)" "$logfile" apt-get update
fi

src=$(find "$src_root" -maxdepth 1 -type d -name 'kubernetes-*' | head -n 1)
if [[ -z $src ]]; then
  log "fetching Debian's kubernetes source package (log: $logfile)"
  (cd "$src_root" && run "apt-get source kubernetes" "$logfile" apt-get source kubernetes)
  src=$(find "$src_root" -maxdepth 1 -type d -name 'kubernetes-*' | head -n 1)
  [[ -n $src ]] || die "apt-get source kubernetes" "$logfile" "no source tree appeared in $src_root"
fi

# reflect2 v1.0.1 (vendored) crashes the API server under Go >= 1.18: replace it with Debian's 1.0.2.
r2=$src/vendor/github.com/modern-go/reflect2
if [[ ! -f $r2/.replaced-by-codetask ]]; then
  log "replacing vendored reflect2 with Debian's golang-github-modern-go-reflect2-dev"
  find "$r2" -maxdepth 1 \( -name '*.go' -o -name '*.s' \) -delete
  cp /usr/share/gocode/src/github.com/modern-go/reflect2/*.go "$r2"/
  cp /usr/share/gocode/src/github.com/modern-go/reflect2/*.s "$r2"/ 2>/dev/null || true
  find "$r2" -name '*_test.go' -delete
  touch "$r2/.replaced-by-codetask"
fi

log "building Kubernetes $K8S_VERSION ($WHAT); 7-9 min on 2 cores (log: $logfile)"
mkdir -p "$src/.go/src/k8s.io"
ln -sfn "$src" "$src/.go/src/k8s.io/kubernetes"
(
  cd "$src/.go/src/k8s.io/kubernetes"
  export GOPATH=$src/.go CGO_ENABLED=0 GOCACHE=$CACHE_DIR/gocache
  run "make kubernetes" "$logfile" make WHAT="$WHAT"
)
mkdir -p "$K8S_BIN.tmp"
for b in "${BINARIES[@]}"; do
  [[ $b == pause ]] && continue
  cp "$src/_output/local/bin/linux/amd64/$b" "$K8S_BIN.tmp/" || die "collect binaries" "$logfile" "$b was not built"
done
run "build pause" "$logfile" gcc -Os -static -o "$K8S_BIN.tmp/pause" "$src/build/pause/linux/pause.c"
rm -rf "$K8S_BIN" && mv "$K8S_BIN.tmp" "$K8S_BIN"
log "binaries cached in $K8S_BIN"
