# The project image: Deno + the project, for the scoring function (`deno task serve`) and the
# operator (`deno task operator`); CPU only (onnxruntime-node's native CPU build).
#
#   docker build -f k8s/images/project.Dockerfile -t ghcr.io/example/datarater:0.1.0 .
ARG DENO_VERSION=2.9.6
FROM denoland/deno:bin-${DENO_VERSION} AS deno

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=deno /deno /usr/local/bin/deno
ENV DENO_DIR=/app/.deno \
    DENO_NO_UPDATE_CHECK=1 \
    # onnxruntime-node's install script would download CUDA binaries; the CPU build is bundled.
    ONNXRUNTIME_NODE_INSTALL=skip \
    PORT=8080

WORKDIR /app
COPY deno.json deno.lock ./
COPY lib/ lib/
COPY functions/ functions/
COPY cluster/ cluster/
COPY scripts/ scripts/
RUN deno install --frozen \
 && deno cache --frozen functions/main.ts cluster/main.ts scripts/score.ts \
 && chown -R 65532:65532 /app

USER 65532:65532
EXPOSE 8080
ENTRYPOINT []
CMD ["deno", "task", "serve"]
