#!/usr/bin/env bash
# Builds the bundled plugins and test fixtures in plugins/ (their own cargo workspace) as
# WebAssembly components for wasm32-wasip2, then copies each component and its manifest to
# target/plugins/ at the repository root (EYEFLOW_PLUGINS_DIR overrides it):
#   <crate>.wasm + <crate>.json, and fixture-echo-v2.wasm + fixture-echo-v2.json.
# Idempotent: re-running rebuilds only what changed. Respects CARGO_TARGET_DIR.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
target=wasm32-wasip2

if [[ -n "${CARGO_TARGET_DIR:-}" ]]; then
  # A relative CARGO_TARGET_DIR means relative to where the script was started.
  target_dir="$(mkdir -p "$CARGO_TARGET_DIR" && cd "$CARGO_TARGET_DIR" && pwd)"
else
  target_dir="$root/plugins/target"
fi
out="${EYEFLOW_PLUGINS_DIR:-$root/target/plugins}"

if ! rustup target list --installed | grep -qx "$target"; then
  rustup target add "$target"
fi

cd "$root/plugins"
build() {
  CARGO_TARGET_DIR="$target_dir" cargo build --release --locked --target "$target" "$@"
}
artifact() {
  echo "$target_dir/$target/release/${1//-/_}.wasm"
}
# A component starts with "\0asm" and the component-model version/layer 0d 00 01 00.
check_component() {
  local header
  header="$(head -c 8 "$1" | od -An -tx1 | tr -d ' \n')"
  if [[ "$header" != "0061736d0d000100" ]]; then
    echo "error: $1 is not a WebAssembly component (header $header)" >&2
    exit 1
  fi
}
install() { # crate, manifest file, output name
  local wasm
  wasm="$(artifact "$1")"
  check_component "$wasm"
  cp "$wasm" "$out/$3.wasm"
  cp "$1/$2" "$out/$3.json"
  printf '%8d  %s\n' "$(wc -c <"$out/$3.wasm")" "$out/$3.wasm"
}

mkdir -p "$out"
crates=()
for manifest in */eyeflow-plugin.json; do
  crates+=("${manifest%/eyeflow-plugin.json}")
done

build --workspace
for crate in "${crates[@]}"; do
  install "$crate" eyeflow-plugin.json "$crate"
done

# fixture-echo again as version 2.0.0 (hot-swap tests).
build -p fixture-echo --features v2
install fixture-echo eyeflow-plugin.v2.json fixture-echo-v2

echo "components and manifests in $out"
