#!/usr/bin/env bash
# Make the cluster's CA, serving and client certificates and kubeconfigs (openssl), once per state dir.
#   certs.sh HOST_IP           node 1 and the control plane (local-up.sh)
#   certs.sh HOST_IP --node2   only node 2's certificate and kubeconfigs (node2.sh; the CA must exist)
source "$(dirname "$0")/lib.sh"
mkdir -p "$PKI"
cd "$PKI"
logfile=$LOGS/certs.log
hip=$1 mode=${2:-}

if [[ $mode == --node2 ]]; then
  [[ -f ca.crt && -f ca.key ]] || die "node 2 certificates" "" "no CA in $PKI: bring node 1 up first"
  # A node 2 certificate made for another node-2 address would fail the API server's check of the
  # kubelet's serving certificate (--kubelet-certificate-authority): make it again.
  if [[ -f node2.crt ]] && ! openssl x509 -in node2.crt -noout -text | grep "IP Address:$N2_IP\b" >/dev/null; then
    rm -f node2.crt node2.key
  fi
fi

[[ $mode == --node2 || -f ca.crt ]] || run "make CA" "$logfile" openssl req -x509 -newkey rsa:2048 -nodes -days 3650 \
  -keyout ca.key -out ca.crt -subj "/CN=codetask-local-ca"
[[ $mode == --node2 || -f sa.key ]] || {
  run "make service-account key" "$logfile" openssl genrsa -out sa.key 2048
  run "make service-account key" "$logfile" openssl rsa -in sa.key -pubout -out sa.pub
}

# cert NAME SUBJECT [SANS]: a key and a CA-signed certificate.
cert() {
  local name=$1 subj=$2 sans=${3:-}
  [[ -f $name.crt ]] && return 0
  run "cert $name" "$logfile" openssl req -newkey rsa:2048 -nodes -keyout "$name.key" -out "$name.csr" -subj "$subj"
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=serverAuth,clientAuth"
    [[ -n $sans ]] && echo "subjectAltName=$sans"
  } >"$name.ext"
  run "cert $name" "$logfile" openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
    -days 3650 -out "$name.crt" -extfile "$name.ext"
  rm -f "$name.csr" "$name.ext"
}

# kubeconfig NAME USER [SERVER]: a kubeconfig for a client certificate (default server: this host's
# loopback, which is not the host from inside node 2's network namespace).
kubeconfig() {
  local out=$STATE/$1.kubeconfig user=$2 server=${3:-https://127.0.0.1:$API_PORT}
  cat >"$out" <<KC
apiVersion: v1
kind: Config
clusters:
- name: codetask-local
  cluster:
    certificate-authority-data: $(base64 -w0 ca.crt)
    server: $server
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 "$user.crt")
    client-key-data: $(base64 -w0 "$user.key")
contexts:
- name: codetask-local
  context: {cluster: codetask-local, user: $user}
current-context: codetask-local
KC
  chmod 600 "$out"
}
if [[ $mode == --node2 ]]; then
  # Node 2 reaches the API server at the host's own IP ($hip) through its veth and the host's routing:
  # that address is already in the serving certificate's SANs, so the running API server needs no
  # new certificate. (The host's veth address $N2_HOST_IP is NOT in them.)
  cert node2 "/O=system:nodes/CN=system:node:$N2_NAME" "DNS:$N2_NAME,IP:$N2_IP"
  kubeconfig node2-kubelet node2 "https://$hip:$API_PORT"
  kubeconfig node2-kube-proxy kube-proxy "https://$hip:$API_PORT"
  exit 0
fi

cert apiserver "/CN=kube-apiserver" \
  "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:$SERVICE_IP,IP:$hip"
cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
cert admin "/O=system:masters/CN=codetask-admin"
cert controller-manager "/CN=system:kube-controller-manager"
cert scheduler "/CN=system:kube-scheduler"
cert kube-proxy "/CN=system:kube-proxy"
cert node "/O=system:nodes/CN=system:node:$NODE_NAME" "DNS:$NODE_NAME,DNS:localhost,IP:127.0.0.1,IP:$hip"

kubeconfig admin admin
kubeconfig controller-manager controller-manager
kubeconfig scheduler scheduler
kubeconfig kube-proxy kube-proxy
kubeconfig kubelet node
