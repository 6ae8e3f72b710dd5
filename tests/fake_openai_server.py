"""A scripted OpenAI-compatible server, only for injecting faults that a real server cannot produce on
demand (503s, 500s, a dropped stream). Real-server behaviour is tested against vLLM itself."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeServer:
    def __init__(self, faults: list[int] | None = None, pieces: tuple[str, ...] = ("Hello", " there", "!"),
                 delay_s: float = 0.0, reply: Callable[[dict], str] | None = None) -> None:
        # Status codes to answer, one per request, before succeeding; 0: a dropped stream (the first piece, then the
        # stream ends without its last chunk or [DONE], as when a server dies mid-answer).
        self.faults = list(faults or [])
        self.pieces = pieces
        # A scripted judge: the reply as a function of the request, so a test knows every right verdict.
        self.reply = reply
        self.delay_s = delay_s
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Small streamed chunks: without this each waits out the client's delayed ACK (~40 ms a chunk).
            disable_nagle_algorithm = True

            def log_message(self, *args):
                pass

            def do_GET(self):
                body = json.dumps({"data": [{"id": "fake"}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append({"path": self.path, **body})
                    server.headers.append(dict(self.headers))
                    status = server.faults.pop(0) if server.faults else 200
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                counted = True
                try:
                    if status not in (0, 200):
                        msg = b'{"error": "injected"}'
                        self.send_response(status)
                        self.send_header("Content-Length", str(len(msg)))
                        self.end_headers()
                        self.wfile.write(msg)
                        return
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    chat = self.path.endswith("/chat/completions")
                    pieces = (server.reply(body),) if server.reply else server.pieces
                    if status == 0:
                        choice = {"delta": {"content": pieces[0]}} if chat else {"text": pieces[0]}
                        self._chunk({"choices": [choice]})
                        self._raw(b"")
                        return
                    for piece in pieces:
                        time.sleep(server.delay_s)
                        choice = {"delta": {"content": piece}} if chat else {"text": piece}
                        self._chunk({"choices": [choice]})
                    self._chunk({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": len(pieces)}})
                    # Out of flight before the client can read the end of the stream: a client that sends its next
                    # request on [DONE] must not find this one still counted (a race a loaded machine loses).
                    with server.lock:
                        server.in_flight -= 1
                        counted = False
                    self._raw(b"data: [DONE]\n\n")
                    self._raw(b"")
                finally:
                    if counted:
                        with server.lock:
                            server.in_flight -= 1

            def _chunk(self, event):
                self._raw(f"data: {json.dumps(event)}\n\n".encode())

            def _raw(self, data: bytes):
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # A client that hangs up mid-stream (retries, shutdown) is expected here, not an error to print.
        self.httpd.handle_error = lambda request, client_address: None
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
