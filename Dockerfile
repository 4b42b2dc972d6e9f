# kubebridge image: `scripts/build-image` (it also says how to push).
#
# Stage 1 builds a virtualenv with kubebridge and its pinned dependencies (requirements.lock);
# stage 2 copies only that virtualenv onto a clean base, so no compiler, pip, pip cache or source
# tree ships. The base is pinned by digest (refresh it with `scripts/build-image --print-base`).
# The image runs as uid/gid 65532 with a read-only root filesystem: it writes nothing but /tmp
# (the chart and manifests mount an emptyDir there) and ships no private key.
ARG BASE=python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b

FROM ${BASE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/kubebridge \
 && /opt/kubebridge/bin/pip install setuptools==65.5.0 wheel==0.48.0
COPY pyproject.toml setup.cfg requirements.lock README.md LICENSE ./
COPY exporter/ exporter/
COPY collectors/ collectors/
RUN /opt/kubebridge/bin/pip install --no-build-isolation -c requirements.lock . \
 && /opt/kubebridge/bin/pip uninstall -y pip setuptools wheel \
 && /opt/kubebridge/bin/kubebridge --version \
 && ! find /opt/kubebridge -name '*.key' -o -name '*.pem' | grep -v /certifi/ | grep .

FROM ${BASE}
LABEL org.opencontainers.image.title="kubebridge" \
      org.opencontainers.image.description="Prometheus exporter for Kubernetes with pod metadata joined at collection time" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/kubebridge/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
COPY --from=build /opt/kubebridge /opt/kubebridge
COPY LICENSE /usr/share/doc/kubebridge/LICENSE
# The distroless "nonroot" uid/gid; the manifests' runAsUser matches it.
RUN groupadd --system --gid 65532 kubebridge \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin kubebridge
USER 65532:65532
EXPOSE 9500
ENTRYPOINT ["kubebridge"]
CMD ["run"]
