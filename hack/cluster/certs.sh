#!/usr/bin/env bash
# Make the cluster's CA, serving and client certificates and kubeconfigs (openssl), once per state dir.
source "$(dirname "$0")/lib.sh"
mkdir -p "$PKI"
cd "$PKI"
logfile=$LOGS/certs.log
hip=$1

[[ -f ca.crt ]] || run "make CA" "$logfile" openssl req -x509 -newkey rsa:2048 -nodes -days 3650 \
  -keyout ca.key -out ca.crt -subj "/CN=codetask-local-ca"
[[ -f sa.key ]] || {
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

cert apiserver "/CN=kube-apiserver" \
  "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:$SERVICE_IP,IP:$hip"
cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
cert admin "/O=system:masters/CN=codetask-admin"
cert controller-manager "/CN=system:kube-controller-manager"
cert scheduler "/CN=system:kube-scheduler"
cert kube-proxy "/CN=system:kube-proxy"
cert node "/O=system:nodes/CN=system:node:$NODE_NAME" "DNS:$NODE_NAME,DNS:localhost,IP:127.0.0.1,IP:$hip"

# kubeconfig NAME USER: a kubeconfig for a client certificate.
kubeconfig() {
  local out=$STATE/$1.kubeconfig user=$2
  cat >"$out" <<KC
apiVersion: v1
kind: Config
clusters:
- name: codetask-local
  cluster:
    certificate-authority-data: $(base64 -w0 ca.crt)
    server: https://127.0.0.1:$API_PORT
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
kubeconfig admin admin
kubeconfig controller-manager controller-manager
kubeconfig scheduler scheduler
kubeconfig kube-proxy kube-proxy
kubeconfig kubelet node
