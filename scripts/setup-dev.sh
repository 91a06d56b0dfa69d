#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian-like machine: system tools the
# tests and benchmarks drive (curl, wrk, h2load, tmux, chromium, haproxy) and the project with its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."

SYSTEM_PACKAGES=(curl wrk nghttp2-client tmux chromium haproxy)
missing=()
for cmd in curl wrk h2load tmux chromium haproxy; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
done
if ((${#missing[@]})); then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${SYSTEM_PACKAGES[@]}" >/dev/null
  else
    echo "setup-dev: please install: ${missing[*]} (tests that drive them will fail)" >&2
  fi
fi

python3 -m pip install -q --disable-pip-version-check -e '.[test]'
