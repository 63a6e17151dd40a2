# One image for every courtcast role; the command picks the role.

# the pages' browser libraries (hls.js) from the npm registry, at the versions and hashes
# pinned in core/web/package-lock.json, as scripts/setup.sh fetches them for `make run`
FROM node:20-bookworm-slim AS web
WORKDIR /web
COPY core/web/package.json core/web/package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && mkdir vendor && node -e ' \
  const fs = require("fs"); \
  for (const [name, from] of Object.entries(require("./package.json").courtcast.vendor)) \
    fs.copyFileSync("node_modules/" + from, "vendor/" + name);'

FROM python:3.11-slim-bookworm

RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml setup.py README.md ./
COPY core ./core
COPY --from=web /web/vendor ./core/web/static/vendor
COPY courtcast ./courtcast
COPY media_server ./media_server
COPY recorder ./recorder
COPY control_room ./control_room
COPY device_agents ./device_agents
COPY storage ./storage
COPY configs ./configs
# gcc only while pip compiles the Cython modules (setup.py)
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
 && pip install --no-cache-dir . \
 && apt-get purge -y gcc libc6-dev && apt-get autoremove -y && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home /var/lib/courtcast courtcast \
 && mkdir -p /var/lib/courtcast && chown courtcast /var/lib/courtcast

USER courtcast
EXPOSE 8080 1935
ENTRYPOINT ["courtcast"]
CMD ["up", "--config", "/app/configs/cluster.yaml"]
