# syntax=docker/dockerfile:1
#
# espm-bridge container image.
#
#   docker build -t espm-bridge .
#   docker run --rm -v $PWD/config:/etc/espm-bridge:ro -v espm-data:/var/lib/espm-bridge espm-bridge
#   docker run --rm espm-bridge demo          # the built-in simulator, events on stdout
#
# librdkafka is built from source by rdkafka-sys with its configure script and make (no cmake);
# it links OpenSSL dynamically, hence libssl-dev here and libssl3 at runtime.

# The toolchain the workspace is developed with; locked dependencies need at least 1.90.
ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config libssl-dev make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Everything cargo needs to resolve the workspace (benches/tests are part of crate manifests);
# .dockerignore keeps target/, .git and the chart out of the context.
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
COPY tests ./tests
COPY schemas ./schemas
# Cache mounts keep the registry and the target dir across builds; the binary is copied out of
# the cache so the next stage can see it.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p espm-bridge \
 && install -D -m 0755 target/release/espm-bridge /out/espm-bridge

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/*
# Fixed uid/gid 10001: matches the Helm chart's securityContext (runAsUser/fsGroup 10001).
RUN groupadd --system --gid 10001 espm \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/espm-bridge --shell /usr/sbin/nologin espm \
 && mkdir -p /var/lib/espm-bridge /etc/espm-bridge \
 && chown 10001:10001 /var/lib/espm-bridge
COPY --from=builder /out/espm-bridge /usr/local/bin/espm-bridge
COPY config/production.toml config/demo.toml /usr/share/espm-bridge/examples/
LABEL org.opencontainers.image.title="espm-bridge" \
      org.opencontainers.image.description="ENERGY STAR Portfolio Manager polling turned into CloudEvents on Kafka, NATS JetStream and webhooks" \
      org.opencontainers.image.source="https://github.com/espm-bridge/espm-bridge" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 10001:10001
WORKDIR /var/lib/espm-bridge
# The journal (SQLite): mount a persistent volume here.
VOLUME ["/var/lib/espm-bridge"]
# /metrics, /healthz, /readyz
EXPOSE 9464
ENTRYPOINT ["espm-bridge"]
CMD ["run", "--config", "/etc/espm-bridge/config.toml"]
