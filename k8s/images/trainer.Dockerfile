# The trainer image: Deno + the project, able to run the WebGPU backend on NVIDIA GPUs through
# Vulkan. The pod runs `deno task train --config /etc/datarater/config.json` (set by the operator).
#
#   docker build -f k8s/images/trainer.Dockerfile -t ghcr.io/example/datarater-trainer:0.1.0 .
#
# GPU path: Deno's WebGPU (wgpu) uses Vulkan. The NVIDIA container toolkit mounts the driver's
# Vulkan ICD (nvidia_icd.json and libGLX_nvidia) into the container when the "graphics" driver
# capability is requested (below); the Vulkan loader comes from this image. Without a GPU the same
# image falls back to Mesa's llvmpipe software adapter (slow, but correct).
ARG DENO_VERSION=2.9.6
FROM denoland/deno:bin-${DENO_VERSION} AS deno

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      ca-certificates libvulkan1 mesa-vulkan-drivers libegl1 libgl1 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=deno /deno /usr/local/bin/deno

# compute+utility for CUDA-style tools, graphics for the Vulkan ICD that WebGPU needs.
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics \
    DENO_DIR=/app/.deno \
    DENO_NO_UPDATE_CHECK=1

WORKDIR /app
COPY deno.json deno.lock ./
COPY lib/ lib/
COPY training/ training/
# Install the locked npm dependencies and compile the entrypoint ahead of time, so a pod starts
# without network access to any registry.
RUN deno install --frozen \
 && deno cache --frozen training/main.ts \
 && chown -R 65532:65532 /app

USER 65532:65532
ENTRYPOINT []
CMD ["deno", "task", "train", "--config", "/etc/datarater/config.json"]
