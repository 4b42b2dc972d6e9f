# kubebridge image: `docker build -t kubebridge:0.1.0 .`
#
# Stage 1 builds a virtualenv with kubebridge and its dependencies; stage 2 copies only that
# virtualenv onto a clean python:3.11-slim, so no compiler, pip cache or source tree ships.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/kubebridge
COPY pyproject.toml setup.cfg ./
COPY exporter/ exporter/
COPY collectors/ collectors/
RUN /opt/kubebridge/bin/pip install . \
 && /opt/kubebridge/bin/pip uninstall -y pip setuptools wheel \
 && /opt/kubebridge/bin/kubebridge --version

FROM python:3.11-slim
LABEL org.opencontainers.image.title="kubebridge" \
      org.opencontainers.image.description="Prometheus exporter for Kubernetes with pod metadata joined at collection time" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/kubebridge/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
COPY --from=build /opt/kubebridge /opt/kubebridge
# The distroless "nonroot" uid/gid; the manifests' runAsUser matches it.
RUN groupadd --system --gid 65532 kubebridge \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin kubebridge
USER 65532:65532
EXPOSE 9500
ENTRYPOINT ["kubebridge"]
CMD ["run"]
