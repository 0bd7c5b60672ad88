#!/usr/bin/env bash
# The firmware's build, size and conformance (firmware/README.md).
#
#   scripts/firmware.sh build                  build the QEMU and STM32F4 images (release profile)
#   scripts/firmware.sh lint                   cargo fmt --check and clippy -D warnings on firmware/
#   scripts/firmware.sh test                   the firmware's host tests (loading, verdicts, policy, JSON, semver, slots)
#   scripts/firmware.sh size                   flash=BYTES ram=BYTES of the device image (the QEMU board's
#                                              gateway mode alone; RAM = static + stack high-water)
#   scripts/firmware.sh run DIR [MACHINE]      run the vector in DIR in QEMU, print its trace
#   scripts/firmware.sh conformance            every firmware/vectors/*/ in QEMU on both machines
#                                              and through `eyeflow mcu run`, against expected.trace;
#                                              a tampered copy of a vector must be refused
#   scripts/firmware.sh icount [DIR]           instructions per signature check and per
#                                              10 executed instructions under QEMU's -icount
#   scripts/firmware.sh gateway PORT|pty       the QEMU image in gateway mode on mps2-an386, UART0
#                                              listening on 127.0.0.1:PORT (a [[devices]] link
#                                              tcp:127.0.0.1:PORT), or on a pseudo-terminal whose
#                                              path QEMU prints on stdout ("char device redirected
#                                              to /dev/pts/N"; a tty link); runs until killed (exec)
set -euo pipefail
cd "$(dirname "$0")/.."

# The firmware's own target dir, whatever the caller's CARGO_TARGET_DIR (that one is the
# server workspace's, used for `eyeflow mcu run`).
FIRMWARE_TARGET=$PWD/firmware/target
ELF=$FIRMWARE_TARGET/thumbv7em-none-eabihf/release/eyeflow-qemu
STM32_ELF=$FIRMWARE_TARGET/thumbv7em-none-eabihf/release/eyeflow-stm32f4
# The device image (`size`): the QEMU board built without its conformance mode.
GATEWAY_ELF=$FIRMWARE_TARGET/thumbv7em-none-eabihf/release/eyeflow-qemu-gateway
# QEMU machine → its core clock (the SysTick time driver counts it).
declare -A HZ=([netduinoplus2]=168000000 [mps2-an386]=25000000)
MACHINES=(netduinoplus2 mps2-an386)
# The input area (firmware/boards/qemu/src/inputs.rs).
BASE=0x20010000
PROGRAM_AT=0x20010010
SCRIPT_AT=0x20012010

build() {
  if ! rustup target list --installed | grep -qx thumbv7em-none-eabihf; then
    rustup target add thumbv7em-none-eabihf
  fi
  (
    cd firmware
    export CARGO_TARGET_DIR=$FIRMWARE_TARGET
    cargo build --release -q -p eyeflow-board-qemu
    cargo build --release -q -p eyeflow-board-stm32f4
  )
}

# fmt and clippy of the firmware workspace (outside the server workspace's own checks).
lint() {
  (
    cd firmware
    export CARGO_TARGET_DIR=$FIRMWARE_TARGET
    cargo fmt --all -- --check
    cargo clippy -q --workspace -- -D warnings
    cargo clippy -q -p eyeflow-board-qemu --no-default-features -- -D warnings
    cargo clippy -q -p eyeflow-firmware -p eyeflow-mem --all-targets --target "$(host)" -- -D warnings
  )
}

host() {
  rustc -vV | sed -n 's/^host: //p'
}

# The pure parts on the host (the MCU target has no test harness).
host_tests() {
  (
    cd firmware
    export CARGO_TARGET_DIR=$FIRMWARE_TARGET
    cargo test -q -p eyeflow-firmware -p eyeflow-mem --target "$(host)"
  )
}

need_qemu() {
  if ! command -v qemu-system-arm >/dev/null; then
    echo "installing qemu-system-arm" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-system-arm >/dev/null
  fi
}

# qemu MACHINE PROGRAM SCRIPT STDERR_FILE [QEMU ARGS...]: the firmware's stdout (the trace).
qemu() {
  local machine=$1 program=$2 script=$3 err=$4
  shift 4
  timeout 60 qemu-system-arm -machine "$machine" -nographic -monitor none -serial none \
    -semihosting-config enable=on,target=native "$@" -kernel "$ELF" \
    -device loader,addr=$BASE,data=0x49465945,data-len=4 \
    -device loader,addr=$((BASE + 4)),data=${HZ[$machine]},data-len=4 \
    -device loader,addr=$((BASE + 8)),data="$(stat -c %s "$program")",data-len=4 \
    -device loader,addr=$((BASE + 12)),data="$(stat -c %s "$script")",data-len=4 \
    -device loader,file="$program",addr=$PROGRAM_AT,force-raw=on \
    -device loader,file="$script",addr=$SCRIPT_AT,force-raw=on 2>"$err"
}

# sections ELF NAME...: the summed sizes of the named ELF sections.
sections() {
  python3 - "$@" <<'PY'
import subprocess, sys
names = set(sys.argv[2:])
total = 0
for line in subprocess.run(["readelf", "-SW", sys.argv[1]], capture_output=True, text=True, check=True).stdout.splitlines():
    parts = line.replace("[ ", "[").split()
    if len(parts) > 5 and parts[1] in names:
        total += int(parts[5], 16)
print(total)
PY
}

# gateway_stack ELF DIR: the stack high-water of ELF's gateway mode (mps2-an386) over a
# DEPLOY of DIR's program and a RUN with its event; empty if the exchange failed.
gateway_stack() {
  local elf=$1 dir=$2 port err q used
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  err=$(mktemp)
  timeout 60 qemu-system-arm -machine mps2-an386 -nographic -monitor none \
    -semihosting-config enable=on,target=native \
    -serial "tcp:127.0.0.1:$port,server=on,wait=off" -kernel "$elf" \
    -device loader,addr=$BASE,data=0x47465945,data-len=4 \
    -device loader,addr=$((BASE + 4)),data=${HZ[mps2-an386]},data-len=4 >/dev/null 2>"$err" &
  q=$!
  if python3 scripts/gateway_probe.py "$port" "$dir/program.ir" "$dir/input.bin" >/dev/null; then
    sleep 0.1
    used=$(sed -n 's/^stack=//p' "$err" | sort -n | tail -1)
  else
    echo "gateway mode: $(basename "$dir") did not deploy and run" >&2
  fi
  kill "$q" 2>/dev/null || true
  wait "$q" 2>/dev/null || true
  rm -f "$err"
  echo "${used:-}"
}

vectors() {
  find firmware/vectors -mindepth 1 -maxdepth 1 -type d ! -name src 2>/dev/null | sort
}

# flip FILE OUT: FILE with one byte of its signature (field 6) inverted.
flip() {
  python3 - "$1" "$2" <<'PY'
import sys
data = bytearray(open(sys.argv[1], "rb").read())
at = 0
def varint(at):
    value = shift = 0
    while True:
        b = data[at]; at += 1
        value |= (b & 0x7f) << shift; shift += 7
        if b < 0x80: return value, at
while at < len(data):
    tag, at = varint(at)
    wire = tag & 7
    if wire == 0: _, at = varint(at)
    elif wire == 2:
        n, body = varint(at)
        if tag >> 3 == 6:
            data[body + n // 2] ^= 0xff
            open(sys.argv[2], "wb").write(data)
            sys.exit(0)
        at = body + n
    elif wire == 1: at += 8
    elif wire == 5: at += 4
sys.exit("no signature to flip")
PY
}

case "${1:-}" in
build)
  build
  ;;
gateway)
  port=${2:?usage: scripts/firmware.sh gateway PORT|pty}
  need_qemu
  [ -f "$ELF" ] || build
  if [ "$port" = pty ]; then
    serial=pty
  else
    serial="tcp:127.0.0.1:$port,server=on,wait=off"
  fi
  # The gateway header (boards/qemu/src/gateway/slots.rs): magic "EYFG", the core clock.
  exec qemu-system-arm -machine mps2-an386 -nographic -monitor none \
    -semihosting-config enable=on,target=native \
    -serial "$serial" -kernel "$ELF" \
    -device loader,addr=$BASE,data=0x47465945,data-len=4 \
    -device loader,addr=$((BASE + 4)),data=${HZ[mps2-an386]},data-len=4
  ;;
lint)
  lint
  ;;
test)
  host_tests
  ;;
size)
  # The device image: the QEMU board without its conformance mode (the gateway alone, as a
  # field device runs it: verification, interpreter, gateway protocol); its stack over
  # each running vector DEPLOYed and RUN. Then the test image (both modes) as built by
  # `build`, its stack over the conformance runs; then the STM32F4 image.
  build
  need_qemu
  (cd firmware && CARGO_TARGET_DIR=$FIRMWARE_TARGET cargo build --release -q -p eyeflow-board-qemu --no-default-features)
  cp "$ELF" "$GATEWAY_ELF"
  build
  flash=$(sections "$GATEWAY_ELF" .vector_table .text .rodata .data)
  static=$(sections "$GATEWAY_ELF" .data .bss .uninit)
  # The gateway mode's stack: each vector that runs DEPLOYed over UART0 (loaded, the
  # restart, loaded again), then RUN with its event (scripts/gateway_probe.py).
  gateway_stack=0
  for dir in $(vectors); do
    grep -q '^refused' "$dir/expected.trace" && continue
    used=$(gateway_stack "$GATEWAY_ELF" "$dir")
    ((${used:-0} > gateway_stack)) && gateway_stack=$used
  done
  [ "$gateway_stack" -gt 0 ] || echo "no vector ran in the gateway mode: RAM without the stack" >&2
  stack=0
  for dir in $(vectors); do
    for machine in "${MACHINES[@]}"; do
      err=$(mktemp)
      qemu "$machine" "$dir/program.ir" "$dir/input.bin" "$err" >/dev/null || true
      used=$(sed -n 's/^stack=//p' "$err")
      rm -f "$err"
      ((${used:-0} > stack)) && stack=$used
    done
  done
  [ "$stack" -gt 0 ] || echo "no vector ran: the test image's RAM without the stack" >&2
  echo "flash=$flash ram=$((static + gateway_stack))"
  {
    echo "  device image (QEMU, gateway mode only): static RAM $static, stack high-water $gateway_stack (each running vector deployed and run)"
    echo "  test image (QEMU, gateway and conformance modes): flash=$(sections "$ELF" .vector_table .text .rodata .data) static RAM $(sections "$ELF" .data .bss .uninit), conformance stack high-water $stack (every vector, both machines)"
    echo "  STM32F4 image (gateway on USART2, slots in flash): flash=$(sections "$STM32_ELF" .vector_table .text .rodata .data) static RAM $(sections "$STM32_ELF" .data .bss .uninit)"
  } >&2
  ;;
run)
  dir=${2:?usage: scripts/firmware.sh run DIR [MACHINE]}
  build
  need_qemu
  err=$(mktemp)
  status=0
  qemu "${3:-netduinoplus2}" "$dir/program.ir" "$dir/input.bin" "$err" || status=$?
  cat "$err" >&2
  rm -f "$err"
  exit $status
  ;;
conformance)
  build
  need_qemu
  mapfile -t dirs < <(vectors)
  if [ ${#dirs[@]} -eq 0 ]; then
    echo "no conformance vectors in firmware/vectors (eyeflow mcu vectors --out firmware/vectors)" >&2
    exit 1
  fi
  # The server's side: the `eyeflow` binary of the server workspace (the caller's target dir).
  cargo build -q -p eyeflow-runtime --bin eyeflow
  eyeflow=${CARGO_TARGET_DIR:-$PWD/target}/debug/eyeflow
  failed=0
  tamper_done=0
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  for dir in "${dirs[@]}"; do
    name=$(basename "$dir")
    differs=""
    for where in server "${MACHINES[@]}"; do
      if [ "$where" = server ]; then
        "$eyeflow" mcu run "$dir" >"$tmp/got" 2>"$tmp/err" || echo "(exit status $?: $(cat "$tmp/err"))" >>"$tmp/got"
      else
        qemu "$where" "$dir/program.ir" "$dir/input.bin" "$tmp/err" >"$tmp/got" || echo "(exit status $?)" >>"$tmp/got"
      fi
      if ! diff -u "$dir/expected.trace" "$tmp/got" >"$tmp/diff"; then
        differs+="  on $where:"$'\n'"$(tail -n +3 "$tmp/diff")"$'\n'
      fi
    done
    if [ -z "$differs" ]; then
      echo "vector $name identical"
    else
      echo "vector $name differs"
      printf '%s' "$differs"
      failed=1
    fi
    # One byte flipped in the signature of a program that runs: refused, on both machines.
    if [ $tamper_done = 0 ] && ! grep -q '^refused' "$dir/expected.trace"; then
      tamper_done=1
      flip "$dir/program.ir" "$tmp/tampered.ir"
      for machine in "${MACHINES[@]}"; do
        got=$(qemu "$machine" "$tmp/tampered.ir" "$dir/input.bin" "$tmp/err" || true)
        if [ "$got" = "refused bad_signature" ]; then
          echo "vector $name with a flipped byte refused on $machine"
        else
          echo "vector $name with a flipped byte NOT refused on $machine: $got"
          failed=1
        fi
      done
    fi
  done
  exit $failed
  ;;
icount)
  build
  need_qemu
  # Virtual time counts instructions only while the core runs: a vector whose hardware
  # answers without delay (loop_three: ten steps) measures the execution alone.
  dir=${2:-firmware/vectors/loop_three}
  [ -d "$dir" ] || dir=
  [ -n "$dir" ] || { echo "no vector that runs" >&2; exit 1; }
  err=$(mktemp)
  # shift=0: one instruction per nanosecond of virtual time, which SysTick counts at 168 MHz.
  steps=$(qemu netduinoplus2 "$dir/program.ir" "$dir/input.bin" "$err" -icount shift=0 | grep -c '^step' || true)
  verify=$(sed -n 's/^cycles verify=\([0-9]*\).*/\1/p' "$err")
  run=$(sed -n 's/^cycles run=//p' "$err")
  rm -f "$err"
  hz=${HZ[netduinoplus2]}
  echo "signature_check_instructions=$((verify * 1000000000 / hz))"
  echo "execution_instructions_per_10=$((run * 1000000000 / hz * 10 / (steps > 0 ? steps : 1))) (vector $(basename "$dir"), $steps steps)"
  ;;
*)
  sed -n '2,/^set /p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'
  exit 2
  ;;
esac
