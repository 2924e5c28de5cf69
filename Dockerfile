# Multi-stage build: a static (musl) release binary in a distroless, non-root runtime image.
# etcd's own `etcdutl` and `etcd` (static Go binaries) of the release CSM runs (cray-etcd-base:
# Bitnami etcd 3.5.21): a backup is restored into a scratch directory with etcdutl before a
# restore deletes anything ([recovery] etcdutl), and a restore drill serves the restored backup
# with etcd, a child of the service in its pod ([drills] etcd).
FROM gcr.io/etcd-development/etcd:v3.5.21 AS etcd

FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools=1.2.3-1 \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add x86_64-unknown-linux-musl \
    && install -d /out/data
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
COPY src ./src
COPY migrations ./migrations
COPY benches ./benches
# No default features: the image carries neither the simulated cluster (`serve --simulate`
# refuses) nor the test failpoints.
RUN cargo build --locked --release --no-default-features --target x86_64-unknown-linux-musl \
    --bin etcd-repopulator \
    && install -D target/x86_64-unknown-linux-musl/release/etcd-repopulator /out/etcd-repopulator

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/etcd-repopulator /usr/local/bin/etcd-repopulator
COPY --from=etcd /usr/local/bin/etcdutl /usr/local/bin/etcdutl
COPY --from=etcd /usr/local/bin/etcd /usr/local/bin/etcd
# The database's directory, owned by the user the service runs as: `docker run` works without a
# volume (the history is then lost with the container), and a volume mounted there starts out
# writable by that user.
COPY --from=build --chown=65532:65532 /out/data /var/lib/etcd-repopulator
USER 65532:65532
EXPOSE 8080
ENV ETCD_REPOPULATOR_DATABASE=/var/lib/etcd-repopulator/runs.db
ENTRYPOINT ["/usr/local/bin/etcd-repopulator"]
CMD ["serve"]
