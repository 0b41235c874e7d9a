# syntax=docker/dockerfile:1

# Build stage: a release binary with everything (migrations, Swagger UI) embedded.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# Dependencies first, in their own layer. Everything the workspace's
# manifests name is copied as it is (the load generator, the benches and
# the tests with their test kit are small and seldom change), so that cargo
# can load the workspace from what is copied; only the service's own sources
# are stand-ins here, and this layer is rebuilt when a manifest, the lock
# file, loadgen/, benches/ or tests/ change.
COPY Cargo.toml Cargo.lock ./
COPY loadgen loadgen
COPY benches benches
COPY tests tests
RUN mkdir -p src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked --bin clerk-role-sync
# Then the service itself. The sources are touched so that cargo sees them
# as newer than the stand-ins it built a moment ago.
COPY src src
COPY migrations migrations
RUN touch src/lib.rs src/main.rs \
    && cargo build --release --locked --bin clerk-role-sync

# Runtime stage: a small Debian with the binary, running as an unprivileged user.
FROM debian:bookworm-slim
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --create-home --home-dir /app app \
    && mkdir -p /app/data \
    && chown app:app /app/data
COPY --from=build /src/target/release/clerk-role-sync /usr/local/bin/clerk-role-sync

USER 10001:10001
WORKDIR /app
ENV BIND_ADDR=0.0.0.0:8080 \
    DATABASE_URL=sqlite:///app/data/clerk-role-sync.db \
    LOG_FORMAT=json
VOLUME ["/app/data"]
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8080/healthz"]
ENTRYPOINT ["clerk-role-sync"]
CMD ["serve"]
