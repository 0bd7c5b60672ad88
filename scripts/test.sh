#!/usr/bin/env bash
# The whole test suite (the README's second command). Installs what it needs on a fresh
# machine: the firmware's cross target and wasm32-wasip2 for the plugins. Later issues add the servers the integration
# tests talk to (Redis, Kafka-protocol broker, OpenBao, Mosquitto).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup target list --installed | grep -qx thumbv7em-none-eabihf; then
  rustup target add thumbv7em-none-eabihf
fi

# The bundled plugins and test fixtures (components the host tests load).
bash scripts/build-plugins.sh
cargo test --workspace --all-targets
cargo test --workspace --doc
# The firmware must keep building for the MCU target.
cargo build -p eyeflow-firmware --target thumbv7em-none-eabihf
