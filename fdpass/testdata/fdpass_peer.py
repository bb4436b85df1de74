#!/usr/bin/env python3
"""Interop peer for fdpass's tests, built on Python's socket.send_fds and
socket.recv_fds (standard library, 3.9+). The socket's descriptor number
comes from PKTIPC_FDPASS_FD (fdpass.StartChild).

  raw-send N        N sendmsg calls of b"\\0" plus one pipe holding "py-<i>"
  raw-recv N        receive N raw messages, print "<i> <content>"
  framed-send N K   N framed messages "py-msg-<i>" with K pipes each holding
                    "py-<i>-<k>"; several descriptors ride in one cmsg, and a
                    message with more than 253 is split into continuation chunks
  framed-recv N     receive N framed messages (split or bundled), print
                    "<i> <data> <content>,<content>,..."
  bad-nofd          one data byte without a descriptor (FDpasser would hand out fd 1)
  bad-twofds        one 0x00 byte carrying two descriptors
"""
import os
import socket
import struct
import sys

MAGIC, VERSION, MORE, CONT, BUNDLE, MAX_FDS = 0xFD, 1, 0x01, 0x02, 0x04, 253
HEADER = struct.Struct(">BBHI")


def pipe_with(content):
    r, w = os.pipe()
    os.write(w, content.encode())
    os.close(w)
    return r


def read_all(fd):
    out = b""
    while True:
        chunk = os.read(fd, 4096)
        if not chunk:
            return out.decode()
        out += chunk


def send_all(sock, data, fds):
    """Send data with fds on its first byte; finish a short write plainly."""
    n = socket.send_fds(sock, [data], fds)
    while n < len(data):
        n += sock.send(data[n:])


def recv_exact(sock, n, want_fds):
    """Read exactly n bytes; return them with the descriptors that arrived."""
    data, fds = b"", []
    while len(data) < n:
        chunk, got, flags, _ = socket.recv_fds(
            sock, n - len(data), MAX_FDS, socket.MSG_CMSG_CLOEXEC)
        if flags & socket.MSG_CTRUNC:
            sys.exit("MSG_CTRUNC")
        if not chunk:
            sys.exit("unexpected EOF")
        if got and not want_fds:
            sys.exit("descriptors arrived on data bytes")
        data += chunk
        fds += got
    return data, fds


def framed_messages(sock):
    """Yield (data, fds) for each framed message, following PROTOCOL.md."""
    while True:
        hdr, got = recv_exact(sock, HEADER.size, True)
        magic, vf, nfds, dlen = HEADER.unpack(hdr)
        flags = vf & 0x0F
        if magic != MAGIC or vf >> 4 != VERSION or len(got) != nfds:
            sys.exit("bad header %r with %d fds" % (hdr, len(got)))
        if flags & BUNDLE:
            # Whole messages inside share the bundle's descriptors in order.
            body, _ = recv_exact(sock, dlen, False)
            off = 0
            while off < len(body):
                _, _, k, dl = HEADER.unpack(body[off:off + HEADER.size])
                off += HEADER.size
                yield body[off:off + dl], got[:k]
                got = got[k:]
                off += dl
            continue
        data, _ = recv_exact(sock, dlen, False)
        fds = got
        while flags & MORE:
            hdr, got = recv_exact(sock, HEADER.size, True)
            magic, vf, nfds, dlen = HEADER.unpack(hdr)
            flags = vf & 0x0F
            if not flags & CONT or len(got) != nfds or dlen:
                sys.exit("bad continuation %r with %d fds" % (hdr, len(got)))
            fds += got
        yield data, fds


def main():
    mode = sys.argv[1]
    sock = socket.socket(fileno=int(os.environ["PKTIPC_FDPASS_FD"]))
    if mode == "raw-send":
        for i in range(int(sys.argv[2])):
            fd = pipe_with("py-%d" % i)
            socket.send_fds(sock, [b"\0"], [fd])
            os.close(fd)
        print("sent", flush=True)
    elif mode == "raw-recv":
        for i in range(int(sys.argv[2])):
            data, fds, flags, _ = socket.recv_fds(sock, 1, MAX_FDS, socket.MSG_CMSG_CLOEXEC)
            if data != b"\0" or len(fds) != 1 or flags & socket.MSG_CTRUNC:
                sys.exit("message %d: data %r, %d fds, flags %#x" % (i, data, len(fds), flags))
            print(i, read_all(fds[0]), flush=True)
            os.close(fds[0])
        print("done", flush=True)
    elif mode == "framed-send":
        n, k = int(sys.argv[2]), int(sys.argv[3])
        for i in range(n):
            data = ("py-msg-%d" % i).encode()
            fds = [pipe_with("py-%d-%d" % (i, j)) for j in range(k)]
            chunks = [fds[c:c + MAX_FDS] for c in range(0, len(fds), MAX_FDS)] or [[]]
            for c, part in enumerate(chunks):
                flags = (CONT if c else 0) | (MORE if c < len(chunks) - 1 else 0)
                body = data if c == 0 else b""
                hdr = HEADER.pack(MAGIC, VERSION << 4 | flags, len(part), len(body))
                send_all(sock, hdr + body, part)
            for fd in fds:
                os.close(fd)
        print("sent", flush=True)
    elif mode == "framed-recv":
        n = int(sys.argv[2])
        for i, (data, fds) in zip(range(n), framed_messages(sock)):
            contents = []
            for fd in fds:
                contents.append(read_all(fd))
                os.close(fd)
            print(i, data.decode() or "-", ",".join(contents) or "-", flush=True)
        print("done", flush=True)
    elif mode == "bad-nofd":
        sock.send(b"\0")
        print("sent", flush=True)
    elif mode == "bad-twofds":
        a, b = pipe_with("a"), pipe_with("b")
        socket.send_fds(sock, [b"\0"], [a, b])
        print("sent", flush=True)
    else:
        sys.exit("unknown mode " + mode)
    sock.detach()


if __name__ == "__main__":
    main()
