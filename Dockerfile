# syntax=docker/dockerfile:1
# kvs in a container: a build stage with the Rust toolchain, and a small
# final stage with the binary alone, run as an unprivileged user, with its
# data in the /data volume.
#
#   docker build -t kvs .
#   docker run -d --name kvs -p 23849:23849 -v kvs-data:/data \
#       -e KVS_ADMIN_TOKEN=kvs_… kvs
#
# Without KVS_ADMIN_TOKEN, the first start writes the admin token to
# /data/admin-token: `docker exec kvs cat /data/admin-token`.

FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY . .
# The caches keep downloaded crates and built dependencies between builds.
# The release profile keeps line tables (54 of the binary's 67 MB): the image
# drops them but keeps the symbols, so a backtrace still names its functions.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin kvs \
    && cp target/release/kvs /usr/local/bin/kvs \
    && strip --strip-debug /usr/local/bin/kvs

FROM debian:bookworm-slim
COPY --from=build /usr/local/bin/kvs /usr/local/bin/kvs
RUN groupadd --system --gid 10001 kvs \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin kvs \
    && mkdir /data && chown kvs:kvs /data && chmod 0700 /data
USER 10001:10001
# Every setting of `kvs serve` can be given as a KVS_* variable, the admin
# token as KVS_ADMIN_TOKEN (`docker run -e` or an env file).
ENV KVS_DATA_DIR=/data \
    KVS_LISTEN=0.0.0.0:23849
VOLUME /data
EXPOSE 23849
# The image has no curl: bash's /dev/tcp asks /readyz (200 once storage is
# open and writable). A server with TLS needs a check of its own.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/23849 && printf 'GET /readyz HTTP/1.0\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
# Arguments after the image name are `kvs serve` flags; client commands run
# with `docker exec CONTAINER kvs …`.
ENTRYPOINT ["/usr/local/bin/kvs", "serve"]
