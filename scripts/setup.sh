#!/usr/bin/env bash
# Installs what courtcast needs on a Debian machine (run as root, or with sudo available).
#   scripts/setup.sh venv    Python venv with the pinned dependencies and the pages' browser
#                            libraries from the npm registry (what `make run` needs)
#   scripts/setup.sh test    + Debian packages the tests use as real peers
#   scripts/setup.sh bench   + peers for bench/ (nginx-rtmp)
# Each step is skipped when already done, so repeated runs cost seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
APT_UPDATED=""

apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing Debian packages: ${missing[*]}"
  if [ -z "$APT_UPDATED" ]; then $SUDO apt-get update -qq; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

setup_venv() {
  python3 -c 'import sys; assert sys.version_info >= (3, 11), sys.version' \
    || { echo "courtcast needs Python 3.11 or newer as python3"; exit 1; }
  python3 -m venv --help >/dev/null 2>&1 && python3 -c 'import ensurepip' 2>/dev/null \
    || apt_install python3-venv python3-dev
  if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
  if [ ! -f .venv/.installed ] || [ pyproject.toml -nt .venv/.installed ]; then
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e '.[test]'
    touch .venv/.installed
  fi
  build_native
  setup_web
}

setup_web() {
  # the pages' browser libraries (hls.js), pinned with their hashes in core/web/package-lock.json,
  # fetched from the npm registry and copied to core/web/static/vendor/ (git-ignored), served
  # at /static/vendor/; never committed. Skipped while the copy is newer than the pins.
  local web=core/web stamp=core/web/static/vendor/.installed
  if [ -f "$stamp" ] && [ "$stamp" -nt "$web/package-lock.json" ] && [ "$stamp" -nt "$web/package.json" ]; then
    return 0
  fi
  command -v npm >/dev/null || apt_install nodejs npm
  echo "fetching the pages' browser libraries (npm ci in $web)"
  if ! (cd "$web" && npm ci --omit=dev --no-audit --no-fund --loglevel=error >/dev/null); then
    # courtcast still runs; /static/vendor/ answers 503 saying to run this again
    echo "WARNING: npm ci failed: pages that play HLS (hls.js) will not work until" \
      "scripts/setup.sh venv succeeds" >&2
    return 0
  fi
  mkdir -p "$web/static/vendor"
  (cd "$web" && node -e '
    const fs = require("fs");
    for (const [name, from] of Object.entries(require("./package.json").courtcast.vendor))
      fs.copyFileSync("node_modules/" + from, "static/vendor/" + name);')
  touch "$stamp"
}

build_native() {
  # the Cython-compiled modules (setup.py): rebuilt when a source is newer, else ~1 s
  command -v gcc >/dev/null || apt_install gcc libc6-dev
  .venv/bin/python -c 'import sysconfig, os; assert os.path.exists(os.path.join(
    sysconfig.get_paths()["include"], "Python.h"))' 2>/dev/null || apt_install python3-dev
  .venv/bin/python setup.py -q build_ext --inplace 2>&1 | grep -v BetaConfiguration || true
  .venv/bin/python -c 'from media_server import native
raise SystemExit("\n".join(native.problems()) or None)'
}

setup_test() {
  # ffmpeg: encoder, camera and decoder of the tests; chromium: the browser (Playwright drives
  # Debian's build, never a downloaded one); GStreamer's RTSP server: a real IP camera;
  # a CJK font, so the zh-CN pages' screenshots show Chinese rather than empty boxes.
  apt_install ffmpeg chromium fonts-wqy-microhei python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp \
    gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad \
    gstreamer1.0-plugins-ugly gstreamer1.0-libav
  # ipycam: a real ONVIF PTZ camera (tests/fixtures/onvif_camera.py). --no-deps: it requires
  # opencv-python (GUI build, needs libGL); the test extra has opencv-python-headless instead.
  .venv/bin/python -c 'import importlib.metadata as m; assert m.version("ipycam") == "1.3.0"' \
    2>/dev/null || .venv/bin/pip install -q --no-deps ipycam==1.3.0
}

setup_bench() {
  apt_install nginx libnginx-mod-rtmp
}

case "${1:-venv}" in
  venv) setup_venv ;;
  test) setup_venv; setup_test ;;
  bench) setup_venv; setup_test; setup_bench ;;
  *) echo "usage: $0 venv|test|bench"; exit 2 ;;
esac
