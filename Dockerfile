# syntax=docker/dockerfile:1
# robocall-shield production image (README "Deployment").
#   docker build -t robocall-shield .
# Dependencies come only from requirements.lock and requirements-build.lock,
# pinned with hashes (regenerate with deploy/lock.sh); tests/test_container.py
# lints this file with hadolint and runs the same install steps.
# Pin the base by digest for byte-for-byte rebuilds:
#   --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:...
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# The dependencies first, so that a code change reuses this layer. The
# runtime venv gets no pip or setuptools of its own: the build venv's pip
# installs into it, and only binary wheels are taken (no compiler here).
COPY requirements-build.lock requirements.lock ./
RUN python -m venv /opt/build \
    && /opt/build/bin/pip install --no-cache-dir --require-hashes --only-binary :all: \
        -r requirements-build.lock \
    && python -m venv --without-pip /opt/robocall-shield/venv \
    && /opt/build/bin/pip --python /opt/robocall-shield/venv/bin/python install \
        --no-cache-dir --require-hashes --only-binary :all: -r requirements.lock
COPY pyproject.toml README.md ./
COPY proxy ./proxy
COPY blocklists ./blocklists
# The project's own wheel, built without fetching anything (the build
# backend comes from requirements-build.lock) and installed without deps
# (they are all in requirements.lock).
RUN /opt/build/bin/pip wheel --no-cache-dir --no-deps --no-build-isolation -w /dist . \
    && /opt/build/bin/pip --python /opt/robocall-shield/venv/bin/python install \
        --no-cache-dir --no-deps /dist/robocall_shield-*.whl

FROM ${PYTHON_IMAGE} AS runtime
# A fixed numeric uid/gid, so volume ownership is the same on every host and
# orchestrators can check runAsNonRoot. The config directory is readable by
# the service, not writable; lists and data are its own.
RUN groupadd --system --gid 10001 shield \
    && useradd --system --uid 10001 --gid shield --no-log-init --no-create-home \
        --home-dir /var/lib/robocall-shield --shell /usr/sbin/nologin shield \
    && install -d -o root -g shield -m 0750 /etc/robocall-shield \
    && install -d -o shield -g shield -m 0750 /var/lib/robocall-shield \
        /var/lib/robocall-shield/lists /var/lib/robocall-shield/data
COPY --from=builder /opt/robocall-shield/venv /opt/robocall-shield/venv
COPY deploy/healthcheck.py /opt/robocall-shield/healthcheck.py
ENV PATH=/opt/robocall-shield/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ROBOCALL_SHIELD_CONFIG=/etc/robocall-shield/robocall-shield.toml
WORKDIR /var/lib/robocall-shield/data
USER 10001:10001
# config: robocall-shield.toml (and TLS files) | lists: blocklist artefacts
# ([blocklists] dir) | data: subscribers.sqlite3 ([subscribers] data_dir)
VOLUME ["/etc/robocall-shield", "/var/lib/robocall-shield/lists", "/var/lib/robocall-shield/data"]
# SIP over UDP and TCP, SIP over TLS ([sip] tls_port), admin HTTP(S)
EXPOSE 5060/udp 5060/tcp 5061/tcp 8080/tcp
# GET /healthz at the admin address the config gives (deploy/healthcheck.py).
# The start period covers loading a large blocklist artefact.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "/opt/robocall-shield/healthcheck.py"]
# SIGTERM drains ([sip] drain_seconds): give `docker stop` a longer timeout.
STOPSIGNAL SIGTERM
ENTRYPOINT ["robocall-shield"]
CMD ["serve", "--config", "/etc/robocall-shield/robocall-shield.toml"]
