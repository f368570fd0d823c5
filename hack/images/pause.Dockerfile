# The pod sandbox image, built from Kubernetes' own pause.c (see hack/cluster/build-k8s.sh).
FROM scratch
COPY pause /pause
USER 65535:65535
ENTRYPOINT ["/pause"]
