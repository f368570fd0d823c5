# The agent runner: the CodeTask runner plus the Claude Code CLI, for spec.agent tasks.
# Build context: runner-image/. Same rules as the runner image: Debian, non-root 65532, nothing
# written outside /scratch (HOME, TMPDIR and the working directory) at run time.
ARG BASE=debian:bookworm-slim
FROM ${BASE}
ARG CLAUDE_CODE_VERSION=2.1.330
# The npm package ships the CLI as a native binary per platform (optional dependencies); its
# postinstall puts the one for this machine at bin/claude.exe, so the platform packages (glibc and
# musl, ~370 MB each) go again, and so does npm. nodejs, git and the usual tools stay for the
# agent's own tool calls. A build host that hands RUN steps its CA bundle (SSL_CERT_FILE) gets it
# trusted by npm too.
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-redis nodejs npm \
        bash ca-certificates git procps \
    && if [ -n "${SSL_CERT_FILE:-}" ]; then export NODE_EXTRA_CA_CERTS="${SSL_CERT_FILE:-}"; fi \
    && npm install --global --no-audit --no-fund --omit=dev \
        "@anthropic-ai/claude-code@${CLAUDE_CODE_VERSION}" \
    && rm -rf /usr/local/lib/node_modules/@anthropic-ai/claude-code/node_modules \
    && claude --version \
    && apt-get purge -y npm && apt-get autoremove -y --purge && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /root/.npm /root/.cache
RUN groupadd -g 65532 runner && useradd -u 65532 -g 65532 -M -d /scratch -s /usr/sbin/nologin runner
COPY codetask_runner /opt/codetask/codetask_runner
COPY bin/codetask-runner /opt/codetask/bin/codetask-runner
# Bytecode in the image: the root filesystem is read-only in the pod (and PYTHONDONTWRITEBYTECODE
# is set), so without it every task would compile the runner again (~5 ms of its start-up).
RUN python3 -m compileall -q --invalidation-mode unchecked-hash /opt/codetask
ENV PYTHONPATH=/opt/codetask PYTHONDONTWRITEBYTECODE=1
WORKDIR /scratch
USER 65532:65532
ENTRYPOINT ["python3", "/opt/codetask/bin/codetask-runner"]
