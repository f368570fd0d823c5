# Redis for the chart's optional in-cluster instance (redis.enabled): Debian's redis-server, non-root.
ARG BASE=debian:bookworm-slim
FROM ${BASE}
RUN apt-get update && apt-get install -y --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd -g 65532 codetask && useradd -u 65532 -g 65532 -M -d /data -s /usr/sbin/nologin codetask
WORKDIR /data
USER 65532:65532
ENTRYPOINT ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--save", "", "--appendonly", "no", "--dir", "/data"]
