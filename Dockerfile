# syntax=docker/dockerfile:1

# Build stage: a release binary with everything (migrations, Swagger UI) embedded.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# The whole build context (less .dockerignore): cargo loads every workspace
# member and path dependency (the load generator, the test kit under tests/)
# before it builds anything, so a build from a partial copy cannot start.
COPY . .
RUN cargo build --release --locked --bin clerk-role-sync

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
