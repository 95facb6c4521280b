# Builds the `emporium` binary and ships it in a slim Debian image. The builder is the
# toolchain the test suite runs with; it must not be older than the newest rust-version
# any dependency declares (checked by tests/tests/e2e/deploy.rs).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p emporium-gateway --bin emporium

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/emporium /usr/local/bin/emporium
WORKDIR /var/lib/emporium
EXPOSE 8080
ENTRYPOINT ["emporium"]
CMD ["serve"]
