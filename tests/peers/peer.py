"""Shared parts of the test peers: the event lines they print, TLS connections, and how
a connection's end is read.

Every peer prints one JSON object per line on stdout, flushed at once, so that the Rust
harness can wait for a line as a readiness signal: {"event": NAME, "t": SECONDS, ...}, where
t counts from the peer's start. A peer that holds a connection open waits for its standard
input to reach EOF (the harness closes it), or for a line on it where a step needs a go.

Every wait here is bounded: each socket has a timeout, and no loop runs past a deadline.
"""

import argparse
import json
import os
import select
import socket
import ssl
import sys
import time

START = time.monotonic()

# No single step of any peer waits longer than this for the server.
STEP_TIMEOUT = 40.0


def now():
    return round(time.monotonic() - START, 3)


def emit(event, **fields):
    line = {"event": event, "t": now()}
    line.update(fields)
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def arguments(description, extra=None):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    if extra is not None:
        extra(parser)
    return parser.parse_args()


def context(alpn):
    """A client context that accepts the server's self-signed certificate: what these
    tests check is how connections end, not who the server is."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def tcp(args):
    sock = socket.create_connection((args.host, args.port), timeout=STEP_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def tls_socket(args, alpn):
    """A TLS socket as an application would open one, except that an end of stream without
    close_notify raises instead of looking like a clean end (suppress_ragged_eofs=False)."""
    sock = tcp(args)
    tls = context(alpn).wrap_socket(
        sock, server_hostname="localhost", suppress_ragged_eofs=False
    )
    tls.settimeout(STEP_TIMEOUT)
    return tls


def wait_for_stdin(timeout=STEP_TIMEOUT):
    """Waits until the harness closes our standard input or writes a line; returns the
    line ("" at EOF or when the wait runs out)."""
    ready, _, _ = select.select([sys.stdin], [], [], timeout)
    if not ready:
        return ""
    return sys.stdin.readline().strip()


def read_tls_end(tls, timeout=STEP_TIMEOUT):
    """Reads a TLS socket until its end, returning (how, extra bytes): "close_notify" when
    the server's close_notify came, "ragged_eof" for a TCP end without it, "reset", or
    "timeout"."""
    extra = b""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return "timeout", extra
        tls.settimeout(remaining)
        try:
            data = tls.recv(65536)
        except ssl.SSLZeroReturnError:
            return "close_notify", extra
        except ssl.SSLEOFError:
            return "ragged_eof", extra
        except (ConnectionResetError, BrokenPipeError):
            return "reset", extra
        except (socket.timeout, TimeoutError):
            return "timeout", extra
        except ssl.SSLError as error:
            return "tls_error:" + error.reason if error.reason else "tls_error", extra
        if not data:
            # With suppress_ragged_eofs=False, an empty read means close_notify.
            return "close_notify", extra
        extra += data


def read_tcp_end(sock, timeout=STEP_TIMEOUT):
    """Reads a plain socket (or the socket under a TLS session that has ended) until the
    TCP end: "fin", "reset", or "timeout"; also returns the bytes read before it."""
    data = b""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return "timeout", data
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return "reset", data
        except (socket.timeout, TimeoutError):
            return "timeout", data
        if not chunk:
            return "fin", data
        data += chunk


def raw_view(tls):
    """The plain socket under a TLS socket, for reading the TCP end after close_notify
    without answering it."""
    return socket.socket(fileno=os.dup(tls.fileno()))


def finish_after_close_notify(tls, answer):
    """After the server's close_notify: answer with ours (or not), then read the TCP end.
    Returns ("answered" or "not_answered", "fin" / "reset" / "timeout")."""
    if answer:
        # Sends our close_notify; the server's is already in, so this does not wait.
        raw = tls.unwrap()
        how, data = read_tcp_end(raw)
        raw.close()
        return "answered", how if not data else "data_after_close_notify"
    # The socket stays open: the caller decides when the server sees our TCP end.
    raw = raw_view(tls)
    how, data = read_tcp_end(raw)
    raw.close()
    return "not_answered", how if not data else "data_after_close_notify"


def linger_zero(sock):
    """Makes close() send a TCP reset."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")


class MemoryTls:
    """A TLS client on Python's ssl over memory buffers, for peers that need to control each
    byte on the wire: a partial handshake, raw garbage after it, a TCP half-close that keeps
    the TLS session readable, a close_notify without a TCP end."""

    def __init__(self, args, alpn=None):
        self.sock = tcp(args)
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls = context(alpn).wrap_bio(
            self.incoming, self.outgoing, server_hostname="localhost"
        )
        self.end = None

    def port(self):
        return self.sock.getsockname()[1]

    def flush(self):
        data = self.outgoing.read()
        if data:
            self.sock.sendall(data)

    def handshake(self):
        deadline = time.monotonic() + STEP_TIMEOUT
        while time.monotonic() < deadline:
            try:
                self.tls.do_handshake()
                self.flush()
                return
            except ssl.SSLWantReadError:
                self.flush()
                data = self.sock.recv(65536)
                if not data:
                    raise ConnectionError("server closed during the handshake")
                self.incoming.write(data)
        raise TimeoutError("handshake")

    def first_flight(self):
        """The ClientHello, made but not sent."""
        try:
            self.tls.do_handshake()
        except ssl.SSLWantReadError:
            pass
        return self.outgoing.read()

    def send(self, data):
        self.tls.write(data)
        self.flush()

    def send_close_notify(self):
        try:
            self.tls.unwrap()
        except ssl.SSLWantReadError:
            pass
        self.flush()

    def shutdown_write(self):
        self.sock.shutdown(socket.SHUT_WR)

    def reset(self):
        linger_zero(self.sock)
        self.sock.close()

    def read(self, timeout=STEP_TIMEOUT):
        """The next application bytes, or the end: returns (data, end), where end is None
        while the session goes on, else "close_notify", "ragged_eof", "reset", "timeout"
        or "tls_error:REASON"."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                data = self.tls.read(65536)
                # On memory buffers, the peer's close_notify reads as an empty string.
                return data, None if data else "close_notify"
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLZeroReturnError:
                return b"", "close_notify"
            except ssl.SSLEOFError:
                return b"", "ragged_eof"
            except ssl.SSLError as error:
                return b"", "tls_error:" + str(error.reason)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return b"", "timeout"
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                return b"", "reset"
            except (socket.timeout, TimeoutError):
                return b"", "timeout"
            if data:
                self.incoming.write(data)
            else:
                self.incoming.write_eof()

    def recv(self, _size):
        """Like a socket's recv: bytes, or b"" at the end, which is kept in self.end."""
        data, end = self.read()
        if end is not None:
            self.end = end
        return data

    def read_to_end(self, timeout=STEP_TIMEOUT):
        """Reads until the session ends; returns (bytes, end)."""
        body = b""
        deadline = time.monotonic() + timeout
        while True:
            data, end = self.read(max(0.0, deadline - time.monotonic()))
            body += data
            if end is not None:
                return body, end

    def tcp_end(self, timeout=STEP_TIMEOUT):
        """After the TLS session ended: how the TCP connection ends."""
        how, data = read_tcp_end(self.sock, timeout)
        return how if not data else "data_after_close_notify"


class Http1Reader:
    """Reads HTTP/1.1 responses from anything with recv(); keeps what it read past the end
    of a response for the next one."""

    def __init__(self, recv):
        self.recv = recv
        self.buffer = b""

    def fill(self):
        data = self.recv(65536)
        if not data:
            raise EOFError("end of stream inside a response")
        self.buffer += data

    def until(self, marker):
        while marker not in self.buffer:
            self.fill()
        head, self.buffer = self.buffer.split(marker, 1)
        return head

    def exactly(self, n):
        while len(self.buffer) < n:
            self.fill()
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def response(self, on_chunk=None):
        """One response: a dict with status, headers, body and whether its framing said it
        was complete. A stream that ends inside the body gives complete=False."""
        result = {"status": None, "headers": {}, "body": "", "complete": False}
        body = b""
        try:
            head = self.until(b"\r\n\r\n").decode("latin-1").split("\r\n")
            result["status"] = int(head[0].split(" ")[1])
            for line in head[1:]:
                name, value = line.split(":", 1)
                result["headers"][name.strip().lower()] = value.strip()
            headers = result["headers"]
            if headers.get("transfer-encoding", "").lower() == "chunked":
                while True:
                    size = int(self.until(b"\r\n").split(b";")[0], 16)
                    if size == 0:
                        self.until(b"\r\n")
                        break
                    chunk = self.exactly(size)
                    self.exactly(2)
                    body += chunk
                    if on_chunk is not None:
                        on_chunk(chunk)
            else:
                body = self.exactly(int(headers.get("content-length", "0")))
            result["complete"] = True
        except (EOFError, ssl.SSLError, OSError) as error:
            result["error"] = type(error).__name__ + ": " + str(error)
        result["body"] = body.decode("latin-1")
        result["body_len"] = len(body)
        return result
