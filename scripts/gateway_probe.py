#!/usr/bin/env python3
"""Drives the QEMU image's gateway mode for `scripts/firmware.sh size`.

    gateway_probe.py PORT PROGRAM [SCRIPT]

Connects to the image's UART0 socket, DEPLOYs the signed PROGRAM, waits for LOADED after
the device's restart, sends a RUN with the event of the conformance script SCRIPT (none:
no fields), prints the TRACE lines and returns at the `end` line. Frames as in
mcu/src/frame.rs: EF 5A | type | seq | length u16be | payload | crc32be."""
import socket, struct, sys, time, zlib

DEPLOY, RUN, PONG = 0x81, 0x82, 0x84
HELLO, LOADED, REFUSED, TRACE, PING = 0x01, 0x02, 0x03, 0x04, 0x07


def frame(kind, seq, payload):
    body = bytes([kind, seq]) + struct.pack(">H", len(payload)) + payload
    return b"\xef\x5a" + body + struct.pack(">I", zlib.crc32(body))


def frames(sock):
    buf = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return
        buf += chunk
        while True:
            at = buf.find(b"\xef\x5a")
            if at < 0 or len(buf) < at + 8:
                break
            (n,) = struct.unpack(">H", buf[at + 4:at + 6])
            if len(buf) < at + 10 + n:
                break
            kind, payload = buf[at + 2], buf[at + 6:at + 6 + n]
            buf = buf[at + 10 + n:]
            yield kind, payload


def event_fields(script):
    """The fields section of a conformance script (mcu/src/script.rs): a RUN's payload."""
    at = 5
    for _ in range(script[4]):
        at += 1 + script[at]
        tag = script[at]
        at += 1 + {0: 0, 1: 1, 2: 8}.get(tag, 0)
        if tag == 3:
            at += 2 + struct.unpack(">H", script[at:at + 2])[0]
    return script[4:at]


def main():
    port, program = int(sys.argv[1]), open(sys.argv[2], "rb").read()
    event = event_fields(open(sys.argv[3], "rb").read()) if len(sys.argv) > 3 else b"\x00"
    deadline = time.time() + 30
    while True:
        try:
            sock = socket.create_connection(("127.0.0.1", port))
            break
        except OSError:
            if time.time() > deadline:
                sys.exit("no gateway on the port")
            time.sleep(0.1)
    sock.settimeout(30)
    seq = 0
    deployed = ran = False
    for kind, payload in frames(sock):
        if kind == HELLO:
            sock.sendall(frame(PONG, seq, b"")); seq += 1
            if not deployed:
                sock.sendall(frame(DEPLOY, seq, program)); seq += 1
                deployed = True
        elif kind == PING:
            sock.sendall(frame(PONG, seq, b"")); seq += 1
        elif kind == REFUSED:
            sys.exit("deploy refused: " + payload[1:].decode())
        elif kind == LOADED and not ran:
            sock.sendall(frame(RUN, seq, event)); seq += 1
            ran = True
        elif kind == TRACE:
            line = payload[6:].decode()
            print(line)
            if line.startswith("end "):
                return
    sys.exit("the gateway closed the line")


main()
