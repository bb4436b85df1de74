#!/usr/bin/env python3
"""A LibIPC-shaped peer for the events package's tests (python3, standard
library only). No live LibIPC is available to tests (libipc.md section 1), so
this script behaves on the wire as LibIPC does:

  - each frame goes out with ONE send call; a short send is an error, since
    LibIPC does not retry it;
  - each frame comes in with ONE recv of up to LibIPC's buffer (99,996 bytes
    for Zig, 1,999,994 for C), decoded from the start of that buffer
    (libipc.md section 2). Where LibIPC would go wrong the peer says so
    instead of copying the damage: a read of 4 bytes or fewer is a
    disconnection (Zig), bytes past the first frame are reported as
    "coalesced" (LibIPC drops them), and a frame that needed more than one
    read is completed but counted in "reads" (LibIPC would zero-pad it);
  - one frame in flight: the client waits for each echo before the next.

Formats: --format zig (4-byte big-endian length) or --format c (type,
4-byte big-endian length, user type).

Modes:
  client --socket PATH MSG...
      connect, send each MSG, read its echo. A MSG is [UT=]KIND:VALUE with
      KIND text (UTF-8), hex, pattern (VALUE bytes of i % 256) or empty; UT
      is the C user type (0 if absent). Prints one JSON object per echo:
      {"i", "len" (whole frame), "reads", "sha256" (whole frame), "raw" (hex,
      frames up to 256 bytes), "type", "utype" (C), "match" (echo == sent)},
      then {"done": N}. Exit 0 if every echo matched, 1 otherwise.
  pongd --socket PATH [--conns N]
      listen (unlinking a stale socket, mode 0660 as LibIPC's umask 0117
      gives), print {"listening": PATH}, echo every frame back byte for byte
      as the C pongd does, print {"conn", "rx" (frame length), "reads"} per
      frame, and after N connections ended (0: never) print {"served": N,
      "frames": M}, remove the socket and exit 0.

Every line is one JSON object on stdout; errors are {"error": ...} with exit
status 1.
"""
import argparse
import hashlib
import json
import os
import re
import selectors
import socket
import struct
import sys

# LibIPC's limits (libipc.md section 2).
ZIG_HEADER, ZIG_MAX_PAYLOAD, ZIG_READ = 4, 99992, 99996
C_HEADER, C_MAX_PAYLOAD, C_READ = 6, 1999994, 1999994
C_DATA = 2
C_TYPES = (0, 1, 2, 3)


class PeerError(Exception):
    pass


def emit(obj):
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


def encode(fmt, payload, utype):
    if fmt == "zig":
        if len(payload) > ZIG_MAX_PAYLOAD:
            raise PeerError("payload of %d bytes: LibIPC cannot send it" % len(payload))
        return struct.pack(">I", len(payload)) + payload
    if len(payload) > C_MAX_PAYLOAD:
        raise PeerError("payload of %d bytes over the C header's limit" % len(payload))
    return struct.pack(">BIB", C_DATA, len(payload), utype) + payload


def frame_len(fmt, buf):
    """Whole length of the frame at the start of buf, or None while its
    header is incomplete."""
    if fmt == "zig":
        if len(buf) < ZIG_HEADER:
            return None
        (n,) = struct.unpack_from(">I", buf)
        if n > ZIG_MAX_PAYLOAD:
            raise PeerError("declared length %d over LibIPC's %d" % (n, ZIG_MAX_PAYLOAD))
        return ZIG_HEADER + n
    if len(buf) < C_HEADER:
        return None
    t, n, _ = struct.unpack_from(">BIB", buf)
    if t not in C_TYPES:
        raise PeerError("unknown C message type %d" % t)
    if n > C_MAX_PAYLOAD:
        raise PeerError("declared length %d over the C limit %d" % (n, C_MAX_PAYLOAD))
    return C_HEADER + n


def read_frame(sock, fmt):
    """Read one frame as LibIPC does: one recv into a LibIPC-sized buffer.
    Returns (frame, reads), or (None, 1) for a disconnection."""
    size = ZIG_READ if fmt == "zig" else C_READ
    buf = bytearray(size)
    view = memoryview(buf)
    got = sock.recv_into(view, size)
    if got == 0 or (fmt == "zig" and got <= ZIG_HEADER):
        # Zig LibIPC takes a read of 4 bytes or fewer for a disconnection.
        return None, 1
    reads = 1
    need = frame_len(fmt, buf[:got])
    while need is None or got < need:
        # LibIPC would decode a zero-padded frame here; finish it and count.
        if got == size:
            raise PeerError("frame does not fit LibIPC's %d-byte buffer" % size)
        n = sock.recv_into(view[got:], size - got)
        if n == 0:
            raise PeerError("connection ended inside a frame (%d bytes)" % got)
        got += n
        reads += 1
        if need is None:
            need = frame_len(fmt, buf[:got])
    if got > need:
        raise PeerError("coalesced: %d bytes after the frame, which LibIPC drops" % (got - need))
    return bytes(buf[:need]), reads


def blocking(sock, timeout):
    """Keep sock blocking, as LibIPC's sockets are (Python's settimeout would
    make it non-blocking and let one send go out short), and bound each wait
    with the kernel's SO_RCVTIMEO and SO_SNDTIMEO instead."""
    sock.setblocking(True)
    tv = struct.pack("@ll", int(timeout), int(timeout % 1 * 1e6))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
    return sock


def send_frame(sock, data):
    n = sock.send(data)
    if n != len(data):
        raise PeerError("short send: %d of %d bytes (LibIPC does not retry)" % (n, len(data)))


MSG_RE = re.compile(r"^(?:(\d{1,3})=)?(text|hex|pattern|empty):(.*)$", re.S)


def parse_msg(spec):
    m = MSG_RE.match(spec)
    if not m:
        raise PeerError("bad message spec %r" % spec)
    ut, kind, value = m.groups()
    ut = int(ut) if ut else 0
    if ut > 255:
        raise PeerError("user type %d over 255" % ut)
    if kind == "text":
        payload = value.encode()
    elif kind == "hex":
        payload = bytes.fromhex(value)
    elif kind == "pattern":
        n = int(value)
        payload = (bytes(range(256)) * (n // 256 + 1))[:n]
    else:
        payload = b""
    return payload, ut


def client(args):
    msgs = [parse_msg(s) for s in args.msgs]
    sock = blocking(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM), args.timeout)
    sock.connect(args.socket)
    ok = True
    for i, (payload, ut) in enumerate(msgs):
        sent = encode(args.format, payload, ut)
        send_frame(sock, sent)
        echo, reads = read_frame(sock, args.format)
        if echo is None:
            raise PeerError("disconnected waiting for echo %d" % i)
        out = {
            "i": i,
            "len": len(echo),
            "reads": reads,
            "sha256": hashlib.sha256(echo).hexdigest(),
            "match": echo == sent,
        }
        if len(echo) <= 256:
            out["raw"] = echo.hex()
        if args.format == "c":
            out["type"], out["utype"] = echo[0], echo[5]
        ok = ok and out["match"]
        emit(out)
    sock.close()
    emit({"done": len(msgs)})
    return 0 if ok else 1


def pongd(args):
    try:
        os.unlink(args.socket)
    except FileNotFoundError:
        pass
    ln = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o117)
    try:
        ln.bind(args.socket)
    finally:
        os.umask(old)
    ln.listen(16)
    sel = selectors.DefaultSelector()
    sel.register(ln, selectors.EVENT_READ, None)
    emit({"listening": args.socket})
    ids, served, frames = 0, 0, 0
    try:
        while args.conns == 0 or served < args.conns:
            ready = sel.select(timeout=args.timeout)
            if not ready and args.conns:
                raise PeerError("idle for %gs with %d of %d connections served" % (args.timeout, served, args.conns))
            # One readable descriptor at a time, as LibIPC's loop serves them.
            for key, _ in ready:
                if key.data is None:
                    c, _ = ln.accept()
                    blocking(c, args.timeout)
                    ids += 1
                    sel.register(c, selectors.EVENT_READ, ids)
                    continue
                c = key.fileobj
                try:
                    f, reads = read_frame(c, args.format)
                except ConnectionResetError:
                    f, reads = None, 1
                if f is None:
                    sel.unregister(c)
                    c.close()
                    served += 1
                    continue
                frames += 1
                emit({"conn": key.data, "rx": len(f), "reads": reads})
                send_frame(c, f)
    finally:
        ln.close()
        try:
            os.unlink(args.socket)
        except FileNotFoundError:
            pass
    emit({"served": served, "frames": frames})
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=("client", "pongd"))
    p.add_argument("--format", choices=("zig", "c"), required=True)
    p.add_argument("--socket", required=True)
    p.add_argument("--conns", type=int, default=0)
    p.add_argument("--timeout", type=float, default=10.0, help="seconds any one wait may take")
    p.add_argument("msgs", nargs="*")
    args = p.parse_intermixed_args()
    try:
        return client(args) if args.mode == "client" else pongd(args)
    except (PeerError, OSError) as e:
        emit({"error": "%s: %s" % (type(e).__name__, e)})
        return 1


if __name__ == "__main__":
    sys.exit(main())
