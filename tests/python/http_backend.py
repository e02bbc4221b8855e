"""An HTTP backend written with Python's standard `http.server` (not hyper), for the http
gateway's tests against real-world peers (rmicro/tests/gateway_backends.rs).

Usage: http_backend.py MODE
  MODE  1.0:   BaseHTTPRequestHandler's default, HTTP/1.0: no Content-Length, every body ended
               by closing the connection
        1.1:   protocol_version = "HTTP/1.1": Content-Length (or chunked where streamed),
               connections kept alive, and closed after 0.5 s idle (the handler's timeout)
        close: HTTP/1.1 with `Connection: close` on every response
        once:  HTTP/1.1, each connection answering one request and kept alive, then closed
               when the next request comes, unanswered (a keep-alive timeout firing just then)

Paths (by their last segment, whatever the service prefix):
  /…/hello          `hello <mode>`
  /…/big?n=N        N bytes, byte i being i % 251, written in 64 KiB pieces
  /…/sse            five server-sent events, one every 200 ms, each written and flushed
  /…/longpoll       `done` after 1.5 s
  /…/upload         (POST, Content-Length or chunked) reads the body 4 KiB at a time, 20 ms
                    apart; answers `len=N sum=S` (S the sum of the bytes)
  /…/early          103 Early Hints, then `hinted` (1.1 only)
  /…/clte           a response with both Content-Length and Transfer-Encoding: chunked
  /…/tegzip         a response in `Transfer-Encoding: gzip, chunked` (`hello` gzipped)
  /…/count          how many requests this process served before this one
  /…/broken         how many streamed answers broke off (the reader went away)

Prints `listening on 127.0.0.1:PORT` once serving; exits when its standard input closes.
"""
import gzip
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

mode = sys.argv[1]
served = 0
broken = 0
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0" if mode == "1.0" else "HTTP/1.1"
    # Kept-alive connections idle for this long are closed (HTTP/1.1 modes).
    timeout = 0.5

    def log_message(self, *args):
        pass

    def framed(self, body, content_type="text/plain"):
        """Sends `body` whole, framed as the mode frames it."""
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        if mode != "1.0":
            self.send_header("Content-Length", str(len(body)))
        if mode == "close":
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def streamed(self, content_type, pieces, delay):
        """Sends `pieces` one by one, `delay` apart: close-delimited in 1.0, chunked in 1.1."""
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", "no-cache")
        chunked = mode != "1.0"
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        if mode == "close":
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.flush()
        global broken
        try:
            for piece in pieces:
                if delay:
                    time.sleep(delay)
                if chunked:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                else:
                    self.wfile.write(piece)
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            with lock:
                broken += 1
            self.close_connection = True
            return
        if chunked:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

    def read_body(self):
        """The request body, read slowly (Content-Length or chunked)."""
        body = bytearray()

        def slowly(n):
            while n > 0:
                piece = self.rfile.read(min(n, 4096))
                if not piece:
                    raise ConnectionError("body cut short")
                body.extend(piece)
                n -= len(piece)
                time.sleep(0.02)

        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                slowly(size)
                self.rfile.readline()
        else:
            slowly(int(self.headers.get("Content-Length", "0")))
        return bytes(body)

    def handle(self):
        if mode != "once":
            return super().handle()
        self.close_connection = True
        self.handle_one_request()
        if not self.close_connection:
            self.rfile.readline()  # the next request's first line: closed unanswered

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        global served
        with lock:
            count = served
            served += 1
        path, _, query = self.path.partition("?")
        last = path.rsplit("/", 1)[-1]
        if last == "hello":
            self.framed(b"hello " + mode.encode())
        elif last == "broken":
            self.framed(str(broken).encode())
        elif last == "count":
            self.framed(str(count).encode())
        elif last == "big":
            n = int(query.partition("=")[2])
            data = bytes(i % 251 for i in range(251 * 261))  # 65511 bytes, a whole cycle
            pieces = []
            while n > 0:
                pieces.append(data[: min(n, len(data))])
                n -= len(pieces[-1])
            self.streamed("application/octet-stream", pieces, 0)
        elif last == "sse":
            events = [b"id: %d\ndata: event %d\n\n" % (i, i) for i in range(5)]
            self.streamed("text/event-stream", events, 0.2)
        elif last == "longpoll":
            time.sleep(1.5)
            self.framed(b"done")
        elif last == "early":
            self.send_response_only(103)
            self.send_header("Link", "</style.css>; rel=preload; as=style")
            self.end_headers()  # written and flushed at once, before the final answer
            time.sleep(0.1)
            self.framed(b"hinted")
        elif last == "clte":
            # The connection is kept (in 1.1): whoever reads it next must not be confused.
            self.close_connection = mode != "1.1"
            self.wfile.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n0\r\n\r\n"
            )
        elif last == "tegzip":
            zipped = gzip.compress(b"hello")
            self.wfile.write(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                b"%x\r\n%s\r\n0\r\n\r\n" % (len(zipped), zipped)
            )
        else:
            self.send_error(404)

    def do_POST(self):
        global served
        with lock:
            served += 1
        body = self.read_body()
        self.framed(b"len=%d sum=%d" % (len(body), sum(body)))


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
threading.Thread(target=server.serve_forever, daemon=True).start()
print("listening on 127.0.0.1:%d" % server.server_address[1], flush=True)
sys.stdin.read()
