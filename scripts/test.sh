#!/usr/bin/env bash
# The whole test suite (the README's second command). Installs what it needs on a fresh
# machine: the firmware's cross target and QEMU (qemu-system-arm, by scripts/firmware.sh),
# wasm32-wasip2 for the plugins, and the servers the integration tests start on 127.0.0.1
# (Redis, Mosquitto, OpenBao, the tansu Kafka-protocol broker, cached under ~/.cache/eyeflow).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup target list --installed | grep -qx thumbv7em-none-eabihf; then
  rustup target add thumbv7em-none-eabihf
fi

bash scripts/install-services.sh
export PATH="$HOME/.cache/eyeflow/bin:$PATH"

# The bundled plugins and test fixtures (components the host tests load).
bash scripts/build-plugins.sh
cargo test --workspace --all-targets
cargo test --workspace --doc
# The firmware (its own workspace, firmware/) must keep building for the MCU target, and run
# every conformance vector in QEMU as the server does (installs qemu-system-arm if absent).
bash scripts/firmware.sh build
bash scripts/firmware.sh lint
bash scripts/firmware.sh test
bash scripts/firmware.sh conformance
