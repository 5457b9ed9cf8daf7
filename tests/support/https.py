"""A static HTTPS server on 127.0.0.1 for the tests of published image trees: a self-signed certificate for
IP:127.0.0.1 made with openssl, Python's http.server in a thread, stopped on exit. Clients trust the certificate
for that run only: wget through a WGETRC naming it (LXC's download template), Go programs (LXD) through
SSL_CERT_FILE."""
from __future__ import annotations

import contextlib
import functools
import http.server
import ssl
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator


@dataclass
class Server:
    port: int
    cert: Path
    wgetrc: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:   # noqa: ANN002 - http.server's signature
        pass


@contextlib.contextmanager
def https_server(root: Path, where: Path) -> Iterator[Server]:
    cert, key = where / "server.crt", where / "server.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    wgetrc = where / "wgetrc"
    wgetrc.write_text(f"ca_certificate = {cert}\n")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield Server(httpd.server_address[1], cert, wgetrc)
    finally:
        httpd.shutdown()
        httpd.server_close()
        t.join(timeout=10)
