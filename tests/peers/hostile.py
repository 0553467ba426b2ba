"""Peers that misbehave, one --scenario each, over HTTP/1.1 and Python's ssl on memory
buffers (so that every byte on the wire is ours to choose).

Each scenario first gets into place and prints `ready` {port}. With --wait-go it then waits
for a line on standard input before its hostile act, so that the harness can start a
graceful shutdown first. It reports what it saw of the server's end in `end`, then holds
its socket until standard input reaches EOF.

Scenarios:
  never-read       asks for a large response and never reads it
  slow-headers     sends its request headers one byte per second
  handshake-stall  sends half a ClientHello and stops
  silent           completes the handshake and sends nothing
  garbage-hello    sends garbage instead of a ClientHello
  garbage-http     completes the handshake, then sends garbage inside TLS records
  garbage-tls      completes the handshake, then sends garbage that is not TLS at all
  garbage-after-close-notify
                   waits for the server's close_notify, then answers with bytes that are
                   not TLS
  reset            resets the connection in the middle of a large response
  half-close-body  half-closes TCP in the middle of a POST /echo request body
"""

import socket

import peer

LARGE = 32 * 1024 * 1024
ECHO_LENGTH = 100_000
ECHO_SENT = 1_000
GARBAGE = bytes(range(256)) * 4


def options(parser):
    parser.add_argument("--scenario", required=True)
    parser.add_argument("--wait-go", action="store_true")


def main():
    args = peer.arguments(__doc__, options)
    scenario = SCENARIOS[args.scenario]
    scenario(args)
    # Hold the socket (and whatever the server left in it) until the harness is done.
    peer.wait_for_stdin()


def ready(args, port):
    peer.emit("ready", port=port)
    if args.wait_go:
        peer.wait_for_stdin()


def tls_end(tls):
    """Reads to the end of the TLS session, then to the TCP end; reports both."""
    data, how = tls.read_to_end()
    tcp = tls.tcp_end() if how == "close_notify" else None
    peer.emit("end", how=how, tcp=tcp, data_len=len(data),
              data=data[:200].decode("latin-1"))


def raw_end(sock):
    how, data = peer.read_tcp_end(sock)
    peer.emit("end", how=how, data_len=len(data), data=data[:40].hex())


def never_read(args):
    tls = peer.MemoryTls(args, ["http/1.1"])
    tls.handshake()
    tls.send(f"GET /bytes?n={LARGE} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    ready(args, tls.port())
    globals()["held"] = tls


def slow_headers(args):
    tls = peer.MemoryTls(args, ["http/1.1"])
    tls.handshake()
    tls.send(b"G")
    ready(args, tls.port())
    trickle = b"ET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"z" * 200
    data, end = b"", None
    for byte in trickle:
        # One byte per second, unless the server has something to say first.
        data, end = tls.read(1.0)
        if data or end != "timeout":
            break
        tls.send(bytes([byte]))
    if end in (None, "timeout"):
        more, end = tls.read_to_end()
        data += more
    tcp = tls.tcp_end() if end == "close_notify" else None
    peer.emit("end", how=end, tcp=tcp, data_len=len(data),
              data=data[:200].decode("latin-1"))
    tls.sock.close()


def handshake_stall(args):
    tls = peer.MemoryTls(args, ["http/1.1"])
    hello = tls.first_flight()
    tls.sock.sendall(hello[: len(hello) // 2])
    ready(args, tls.port())
    raw_end(tls.sock)
    tls.sock.close()


def silent(args):
    tls = peer.MemoryTls(args, ["http/1.1"])
    tls.handshake()
    ready(args, tls.port())
    tls_end(tls)
    tls.sock.close()


def garbage_hello(args):
    sock = peer.tcp(args)
    ready(args, sock.getsockname()[1])
    try:
        sock.sendall(GARBAGE)
    except OSError:
        pass
    raw_end(sock)
    sock.close()


def garbage_http(args):
    tls = peer.MemoryTls(args, ["http/1.1"])
    tls.handshake()
    ready(args, tls.port())
    tls.send(GARBAGE)
    tls_end(tls)
    tls.sock.close()


def garbage_tls(args):
    tls = peer.MemoryTls(args, ["http/1.1"])
    tls.handshake()
    ready(args, tls.port())
    tls.sock.sendall(b"\x17\x03\x03\x00\x40" + GARBAGE[:64] + GARBAGE)
    tls_end(tls)
    tls.sock.close()


def garbage_after_close_notify(args):
    tls = peer.MemoryTls(args, ["http/1.1"])
    tls.handshake()
    ready(args, tls.port())
    data, end = tls.read_to_end()
    tls.sock.sendall(b"\x17\x03\x03\x00\x40" + GARBAGE[:64])
    tcp = tls.tcp_end()
    peer.emit("end", how=end, tcp=tcp, data_len=len(data))
    tls.sock.close()


def reset(args):
    tls = peer.MemoryTls(args, ["http/1.1"])
    tls.handshake()
    tls.send(f"GET /bytes?n={LARGE} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    received = 0
    while received < 64 * 1024:
        data, end = tls.read()
        if end is not None:
            raise ConnectionError(f"response ended early: {end}")
        received += len(data)
    ready(args, tls.port())
    tls.reset()
    peer.emit("end", how="reset_sent", received=received)


def half_close_body(args):
    tls = peer.MemoryTls(args, ["http/1.1"])
    tls.handshake()
    head = (f"POST /echo HTTP/1.1\r\nHost: localhost\r\n"
            f"Content-Length: {ECHO_LENGTH}\r\n\r\n")
    tls.send(head.encode() + b"e" * ECHO_SENT)
    ready(args, tls.port())
    # A TCP half-close, with no close_notify: the request body can never be complete.
    tls.shutdown_write()
    response = peer.Http1Reader(tls.recv).response()
    end = tls.end
    if end is None:
        _, end = tls.read_to_end()
    tcp = tls.tcp_end() if end == "close_notify" else None
    response.pop("body")
    peer.emit("end", how=end, tcp=tcp, response=response)
    tls.sock.close()


SCENARIOS = {
    "never-read": never_read,
    "slow-headers": slow_headers,
    "handshake-stall": handshake_stall,
    "silent": silent,
    "garbage-hello": garbage_hello,
    "garbage-http": garbage_http,
    "garbage-tls": garbage_tls,
    "garbage-after-close-notify": garbage_after_close_notify,
    "reset": reset,
    "half-close-body": half_close_body,
}

if __name__ == "__main__":
    try:
        main()
    except (ConnectionError, socket.timeout, TimeoutError) as error:
        peer.emit("error", error=type(error).__name__ + ": " + str(error))
        raise SystemExit(1)
