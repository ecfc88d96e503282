# Multi-stage build of the fleet health broker and the simulated fleet.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p fleet-broker -p sim-device

FROM debian:bookworm-slim
# CA certificates: Slack's API and webhooks are HTTPS.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --home /var/lib/fleet fleet && mkdir -p /var/lib/fleet/data && chown -R fleet /var/lib/fleet
COPY --from=build /src/target/release/fleet-broker /usr/local/bin/fleet-broker
COPY --from=build /src/target/release/sim-device /usr/local/bin/sim-device
USER fleet
WORKDIR /var/lib/fleet
EXPOSE 1883 8080
ENTRYPOINT ["fleet-broker"]
