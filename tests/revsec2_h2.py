"""A raw HTTP/2 gRPC caller for attack tests (revsec2): what a client library will not
do. `Stalled` opens one connection that announces a stream window of 0 bytes, so the
server can never send a response message on it, and makes unary calls on it that send
their headers and request in full; it answers the server's SETTINGS and PINGs, so the
connection stays up for as long as it is open."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

DATA, HEADERS, RST_STREAM, SETTINGS, PING = 0, 1, 3, 4, 6
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1
INITIAL_WINDOW_SIZE = 0x4
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes([kind, flags])
        + struct.pack(">I", stream)
        + payload
    )


def literal(name: str, value: str) -> bytes:
    """An HPACK literal header field, not indexed, no Huffman (names and values < 127)."""
    n, v = name.encode(), value.encode()
    return b"\x00" + bytes([len(n)]) + n + bytes([len(v)]) + v


class Stalled:
    """One connection to `address` ('127.0.0.1:port') from `source` (an address of
    this host) whose stream window is 0."""

    def __init__(self, address: str, source: str = "127.0.0.1") -> None:
        host, port = address.rsplit(":", 1)
        self.authority = address
        self.sock = socket.create_connection(
            (host, int(port)), timeout=10, source_address=(source, 0)
        )
        self.sock.settimeout(None)
        self.lock = threading.Lock()
        self.next_stream = 1
        self.frames: list[tuple[int, int, int]] = []  # (type, flags, stream) received
        self.send(PREFACE + frame(SETTINGS, 0, 0, struct.pack(">HI", INITIAL_WINDOW_SIZE, 0)))
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def send(self, data: bytes) -> None:
        with self.lock:
            self.sock.sendall(data)

    def headers(self, path: str) -> bytes:
        """The HEADERS block of a call to `path` ('/pkg.Service/Method')."""
        fields = (
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", self.authority),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        )
        return b"".join(literal(k, v) for k, v in fields)

    def call(self, path: str, message: bytes = b"") -> int:
        """A unary call to `path` with `message` (serialized); its stream id."""
        stream, self.next_stream = self.next_stream, self.next_stream + 2
        body = b"\x00" + struct.pack(">I", len(message)) + message
        self.send(
            frame(HEADERS, END_HEADERS, stream, self.headers(path))
            + frame(DATA, END_STREAM, stream, body)
        )
        return stream

    def open_calls(self, path: str, n: int) -> None:
        """`n` calls to `path` that send their headers and never a message, in one
        write, whatever the server's limit on streams (SETTINGS) says."""
        block = self.headers(path)
        first, self.next_stream = self.next_stream, self.next_stream + 2 * n
        self.send(b"".join(frame(HEADERS, END_HEADERS, first + 2 * i, block) for i in range(n)))

    def _read(self) -> None:
        buf = b""
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return
                buf += data
                while len(buf) >= 9:
                    size = int.from_bytes(buf[:3], "big")
                    if len(buf) < 9 + size:
                        break
                    kind, flags = buf[3], buf[4]
                    stream = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
                    payload, buf = buf[9 : 9 + size], buf[9 + size :]
                    self.frames.append((kind, flags, stream))
                    if kind == SETTINGS and not flags & ACK:
                        self.send(frame(SETTINGS, ACK, 0))
                    elif kind == PING and not flags & ACK:
                        self.send(frame(PING, ACK, 0, payload))
        except OSError:
            return

    def ended(self) -> set[int]:
        """The streams the server ended: its trailers (END_STREAM) came, or it refused
        the stream (RST_STREAM: past its limit on streams a connection holds)."""
        return {
            s
            for kind, flags, s in self.frames
            if kind == RST_STREAM or (kind == HEADERS and flags & END_STREAM)
        }

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.reader.join(10)
