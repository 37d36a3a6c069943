# refresh-gate container image. Multi-stage: build with the Rust toolchain (and cmake, which
# Pingora's build needs), run on a distroless base as a non-root user.
# Base images are pinned by exact version tag; pin them by digest too in your registry.
FROM docker.io/library/rust:1.95.0-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake build-essential pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin refresh-gate \
 && strip target/release/refresh-gate

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/refresh-gate /usr/local/bin/refresh-gate
COPY conf/refresh-gate.toml /etc/refresh-gate/refresh-gate.toml
# 65532 is distroless's "nonroot".
USER 65532:65532
EXPOSE 9480 9481
ENTRYPOINT ["/usr/local/bin/refresh-gate"]
CMD ["--config", "/etc/refresh-gate/refresh-gate.toml"]
