"""An HTTP/2 client on the `h2` package over Python's ssl (suppress_ragged_eofs=False).

It sends each --path (one after another, or all at once with --concurrent), reads the
responses, then waits for the server to close and reports the order of what it saw: the
end of each stream, GOAWAY frames, PINGs, the server's close_notify and the TCP end.

Hostile modes: --no-ping-ack stops writing anything once the first GOAWAY arrives, so the
PING of the server's two-phase GOAWAY is never acknowledged; --no-read opens the streams and
never reads the socket again, until the harness closes our standard input.

Events: connected {port, alpn}; first_data; response {stream, status, body, complete};
goaway {last_stream_id, error_code}; ready {port} (hostile modes: in place); end {how,
timeline, reply, tcp}.
"""

import ssl

import h2.config
import h2.connection
import h2.events

import peer


class GracefulH2(h2.connection.H2Connection):
    """h2's connection, except that a GOAWAY does not end it at once.

    h2 moves to its CLOSED state on any GOAWAY and then rejects every later frame (its
    issue 1181), while RFC 9113 section 6.8 lets the streams up to the GOAWAY's last stream
    id run to their end, which is what a server's graceful shutdown relies on. Here a
    GOAWAY is only reported; the streams it allows go on.
    """

    def _receive_goaway_frame(self, frame):
        event = h2.events.ConnectionTerminated()
        event.error_code = frame.error_code
        event.last_stream_id = frame.last_stream_id
        event.additional_data = frame.additional_data or None
        return [], [event]


def options(parser):
    parser.add_argument("--path", action="append", required=True)
    parser.add_argument("--concurrent", action="store_true")
    parser.add_argument("--no-ping-ack", action="store_true")
    parser.add_argument("--no-read", action="store_true")


class Client:
    def __init__(self, args):
        self.args = args
        self.tls = peer.tls_socket(args, ["h2"])
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.h2 = GracefulH2(config=config)
        self.h2.initiate_connection()
        self.pending = list(args.path)
        self.streams = {}
        self.timeline = []
        self.silent = False
        self.flush()

    def flush(self):
        data = self.h2.data_to_send()
        if data and not self.silent:
            self.tls.sendall(data)

    def request(self):
        path = self.pending.pop(0)
        stream = self.h2.get_next_available_stream_id()
        headers = [(":method", "GET"), (":scheme", "https"),
                   (":authority", "localhost"), (":path", path)]
        self.h2.send_headers(stream, headers, end_stream=True)
        self.streams[stream] = {"stream": stream, "status": None, "body": b"",
                                "complete": False}
        self.flush()

    def on_event(self, event):
        if isinstance(event, h2.events.ResponseReceived):
            status = dict(event.headers).get(":status")
            self.streams[event.stream_id]["status"] = int(status)
        elif isinstance(event, h2.events.DataReceived):
            stream = self.streams[event.stream_id]
            if not stream["body"]:
                peer.emit("first_data", stream=event.stream_id)
            stream["body"] += event.data
            self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            self.end_stream(event.stream_id, "end_stream")
        elif isinstance(event, h2.events.StreamReset):
            self.end_stream(event.stream_id, "reset")
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.timeline.append(f"goaway:{event.last_stream_id}")
            peer.emit("goaway", last_stream_id=event.last_stream_id,
                      error_code=int(event.error_code))
            if self.args.no_ping_ack:
                self.silent = True
        elif isinstance(event, h2.events.PingReceived):
            self.timeline.append("ping")

    def end_stream(self, stream_id, how):
        stream = self.streams[stream_id]
        stream["complete"] = how == "end_stream"
        self.timeline.append(f"{how}:{stream_id}")
        body = stream["body"].decode("latin-1")
        peer.emit("response", stream=stream_id, status=stream["status"], body=body,
                  body_len=len(stream["body"]), complete=stream["complete"])
        if self.pending and not self.args.concurrent:
            self.request()
        elif self.args.no_ping_ack and not self.pending:
            peer.emit("ready", port=self.tls.getsockname()[1])

    def run(self):
        """Reads until the TLS session ends; returns how it ended."""
        while True:
            try:
                data = self.tls.recv(65536)
            except ssl.SSLEOFError:
                return "ragged_eof"
            except (ConnectionResetError, BrokenPipeError):
                return "reset"
            except (TimeoutError, OSError):
                return "timeout"
            if not data:
                return "close_notify"
            for event in self.h2.receive_data(data):
                self.on_event(event)
            self.flush()


def main():
    args = peer.arguments(__doc__, options)
    client = Client(args)
    tls = client.tls
    peer.emit("connected", port=tls.getsockname()[1], alpn=tls.selected_alpn_protocol())
    client.request()
    while args.concurrent and client.pending:
        client.request()

    if args.no_read:
        peer.emit("ready", port=tls.getsockname()[1])
        peer.wait_for_stdin()
        tls.close()
        return

    how = client.run()
    client.timeline.append(how)
    reply, tcp = None, None
    if how == "close_notify":
        # A peer that went silent does not answer; the others answer as usual.
        reply, tcp = peer.finish_after_close_notify(tls, answer=not client.silent)
        client.timeline.append(tcp)
    peer.emit("end", how=how, timeline=client.timeline, reply=reply, tcp=tcp)
    if client.silent:
        # Silent to the end: the server's wait for our close_notify has to run out.
        peer.wait_for_stdin()


if __name__ == "__main__":
    main()
