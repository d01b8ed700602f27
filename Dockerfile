# The tally binary for docker-compose.yml. Untested on tally's development machines (no Docker
# engine there). librdkafka is built from source by rdkafka-sys (bundled), so the builder
# needs a C toolchain, make and cmake-free defaults only.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p tally

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/tally /usr/local/bin/tally
USER nobody
ENTRYPOINT ["tally"]
