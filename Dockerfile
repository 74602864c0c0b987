# syntax=docker/dockerfile:1
# The service's image: one static binary for every role, on distroless.
#
#   docker build -t identity-verification .
#   docker run identity-verification webhook      # or worker, all (the default),
#                                                 # check-config, replay, gen-key
#
# The syntax line above pins the Dockerfile frontend to version 1, which
# has RUN --mount (the module and build caches below) on any BuildKit.
# Base images are pinned by exact tag (the Go toolchain is the one go.mod
# names, deploy/compose_test.go checks it). distroless publishes no version
# tags: to pin the final stage by digest, resolve it where a registry is
# reachable (`docker buildx imagetools inspect
# gcr.io/distroless/static-debian13:nonroot`) and append @sha256:... here.

FROM golang:1.26.8-bookworm AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOTOOLCHAIN=local
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    go build -trimpath -ldflags "-s -w" -o /out/identity-verification ./cmd/identity-verification

# static-debian13 (Debian 12's distroless images are at their end of
# life): CA certificates (the Stripe API, Temporal Cloud, SMTP TLS),
# tzdata, /etc/passwd with nonroot (65532); no shell, so the health check
# is the binary's own `healthcheck` subcommand (docker-compose.yml).
FROM gcr.io/distroless/static-debian13:nonroot
COPY --from=build /out/identity-verification /usr/local/bin/identity-verification
USER nonroot:nonroot
# The default SQLite file (DATABASE_URL unset) lands in a writable home.
WORKDIR /home/nonroot
# LISTEN_ADDR (webhook, retry links), ADMIN_ADDR (admin API, codec server),
# OPS_ADDR (health, metrics). Inside a container set them to 0.0.0.0:PORT:
# the defaults are 127.0.0.1, unreachable from outside the container.
EXPOSE 8080 8081 9090
ENTRYPOINT ["/usr/local/bin/identity-verification"]
CMD ["all"]
