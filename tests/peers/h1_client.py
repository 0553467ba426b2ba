"""An HTTP/1.1 client on Python's ssl with suppress_ragged_eofs=False, so that a connection
that ends without close_notify shows as an error rather than as a clean end.

It sends each --path in turn on one connection, reading each response whole, then either
waits for the server to close (--then wait) or closes first with its own close_notify
(--then close-first), and reports how the connection ended.

Events: connected {port}; first_chunk (the first chunk of a chunked body, so that the harness
knows a response is in flight); response {status, headers, body, complete}; end {how, reply,
tcp}: how the TLS session ended, whether we answered, and how TCP ended after it.
"""

import ssl

import peer


def options(parser):
    parser.add_argument("--path", action="append", required=True)
    parser.add_argument("--then", choices=["wait", "close-first"], default="wait")
    parser.add_argument("--no-answer", action="store_true",
                        help="do not answer the server's close_notify with ours")


def main():
    args = peer.arguments(__doc__, options)
    tls = peer.tls_socket(args, ["http/1.1"])
    peer.emit("connected", port=tls.getsockname()[1], alpn=tls.selected_alpn_protocol())
    reader = peer.Http1Reader(tls.recv)

    for path in args.path:
        request = f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n"
        tls.sendall(request.encode())
        chunks = []

        def on_chunk(chunk):
            if not chunks:
                peer.emit("first_chunk")
            chunks.append(chunk)

        response = reader.response(on_chunk)
        peer.emit("response", **response)
        if not response["complete"]:
            break

    if args.then == "close-first":
        close_first(tls)
        return
    how, extra = peer.read_tls_end(tls)
    extra = len(extra) + len(reader.buffer)
    if how != "close_notify":
        peer.emit("end", how=how, extra=extra, reply=None, tcp=None)
        return
    reply, tcp = peer.finish_after_close_notify(tls, answer=not args.no_answer)
    peer.emit("end", how=how, extra=extra, reply=reply, tcp=tcp)


def close_first(tls):
    """Sends our close_notify first; unwrap() returns once the server's close_notify is in,
    and fails if the server ends TCP without one."""
    peer.emit("closing")
    try:
        raw = tls.unwrap()
    except ssl.SSLEOFError:
        peer.emit("end", how="ragged_eof", reply=None, tcp=None)
        return
    except (ConnectionResetError, BrokenPipeError):
        peer.emit("end", how="reset", reply=None, tcp=None)
        return
    tcp, data = peer.read_tcp_end(raw)
    peer.emit("end", how="close_notify", reply="sent_first",
              tcp=tcp if not data else "data_after_close_notify")


if __name__ == "__main__":
    main()
