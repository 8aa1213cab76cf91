# A first container for robocall-shield; the production image (non-root,
# health check, read-only root) is tracked in the scale-out issue.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY proxy ./proxy
COPY blocklists ./blocklists
COPY config ./config
RUN pip install --no-cache-dir . && useradd --system --no-create-home shield
USER shield
EXPOSE 5060/udp 5060/tcp 8080/tcp
ENTRYPOINT ["robocall-shield"]
# Mount a config that listens on 0.0.0.0 with sip.advertised_host set.
CMD ["serve", "--config", "/etc/robocall-shield/robocall-shield.toml"]
