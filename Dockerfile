# syntax=docker/dockerfile:1
# minkms container image: `docker build -t minkms:VERSION .`
#
#   docker run -d --name kms -p 7373:7373 -v minkms-data:/var/lib/minkms minkms:VERSION
#       first start: a soft HSM key and a self-signed localhost certificate are generated in the
#       volume and the root API key is printed (`docker logs kms`) — for trying it out;
#   production: mount the configuration and certificates, pass the HSM key from a secret:
#   docker run -d -p 7373:7373 -v minkms-data:/var/lib/minkms -v /etc/minkms:/etc/minkms:ro \
#       -e MINIO_KMS_HSM_KEY=hsm:aes256:… minkms:VERSION server /var/lib/minkms --config /etc/minkms/config.yaml
#
# Reproducible: the base images are pinned by version (pin them by digest, `node:…@sha256:…`,
# where your registry is reachable), the dependencies by package-lock.json (`npm ci`).

ARG NODE_VERSION=20.19
ARG DEBIAN=bookworm

# ---- build: the full image has the C++ toolchain and python3 that better-sqlite3 may need
FROM node:${NODE_VERSION}-${DEBIAN} AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.pack.json ./
COPY src ./src
COPY deploy/docker/trim-modules.sh /usr/local/bin/trim-modules.sh
# The same build as `npm pack`: dist/src only, no source maps; then drop the dev dependencies
# and what the runtime never loads (better-sqlite3's sources and intermediate files).
RUN npx tsc -p tsconfig.pack.json \
 && npm prune --omit=dev --no-audit --no-fund \
 && sh /usr/local/bin/trim-modules.sh node_modules

# ---- run: slim Node 20, no toolchain, no shell tools beyond Debian's base
FROM node:${NODE_VERSION}-${DEBIAN}-slim
ENV NODE_ENV=production
# A fixed, non-root uid/gid (Kubernetes runAsNonRoot needs a numeric USER), owning only the
# data directory.
RUN groupadd --system --gid 10001 minkms \
 && useradd --system --uid 10001 --gid minkms --home-dir /var/lib/minkms --no-create-home --shell /usr/sbin/nologin minkms \
 && mkdir -p /var/lib/minkms /etc/minkms/certs/CAs \
 && chown minkms:minkms /var/lib/minkms \
 && chmod 0700 /var/lib/minkms
WORKDIR /opt/minkms
COPY --from=build /src/package.json ./package.json
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist/src ./dist/src
COPY LICENSE README.md ./
COPY deploy/docker/healthcheck.mjs ./healthcheck.mjs
RUN chmod 0755 dist/src/cli/main.js && ln -s /opt/minkms/dist/src/cli/main.js /usr/local/bin/minkms

USER 10001:10001
VOLUME ["/var/lib/minkms"]
EXPOSE 7373
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 CMD ["node", "/opt/minkms/healthcheck.mjs"]
ENTRYPOINT ["minkms"]
CMD ["server", "/var/lib/minkms", "--address", "0.0.0.0:7373"]
