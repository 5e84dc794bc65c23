# syntax=docker/dockerfile:1
# One image, three commands: producer-api (default), worker, dlq-console.
#   docker build -t jobplane .
#   docker run --rm -e PRODUCER_API_KEYS=... jobplane                 # the API on :8080
#   docker run --rm jobplane worker                                    # a worker, metrics on :9091
#   docker run --rm -e CONSOLE_TOKEN=... jobplane dlq-console          # the console on :8081
#   docker run --rm jobplane producer-api migrate                      # apply the migrations, exit
# compose.yaml runs the whole platform with Redis and PostgreSQL.

FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
# The cache mounts keep the registry and the target folder between builds; the binaries are
# copied out of the cached target folder within the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bins \
    && mkdir -p /out \
    && cp target/release/producer-api target/release/worker target/release/dlq-console /out/

FROM debian:bookworm-slim AS runtime
# ca-certificates for HTTPS (webhooks, Twilio, SES); curl for the container healthchecks.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 jobplane \
    && useradd --system --uid 10001 --gid jobplane --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin jobplane
COPY --from=builder /out/producer-api /out/worker /out/dlq-console /usr/local/bin/
# In a container the processes listen on every interface (their own defaults are 127.0.0.1).
ENV PRODUCER_ADDR=0.0.0.0:8080 \
    CONSOLE_ADDR=0.0.0.0:8081 \
    WORKER_METRICS_ADDR=0.0.0.0:9091
USER 10001:10001
EXPOSE 8080 8081 9091
CMD ["producer-api"]
