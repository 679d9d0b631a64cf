# syntax=docker/dockerfile:1
# Multi-stage: the build stage has pip and the build backend; the final image has only the
# virtualenv, runs as a non-root user, and reads its config from a mounted file.
# Python 3.11: of 3.11.7, 3.12.1 and 3.13.0 (pyenv builds), the one that ran the gateway's hot
# path in the fewest instructions and the most mobile pairs per CPU-second (docs/performance.md,
# eighth round, item 31; the images' own builds were not measured).

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN python -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir .

FROM python:3.11-slim-bookworm
RUN groupadd --system --gid 10001 gateway \
 && useradd --system --uid 10001 --gid gateway --no-create-home --shell /usr/sbin/nologin gateway
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
EXPOSE 8080 9090
# The config (and policy, signing keys) is mounted at /etc/gateway; secrets come from env.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('GATEWAY_ADMIN_PORT', '9090'), timeout=2)"]
ENTRYPOINT ["gateway"]
CMD ["serve", "--config", "/etc/gateway/gateway.yaml"]
