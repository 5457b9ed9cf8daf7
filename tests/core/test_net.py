"""builder/core/net.py, the one GET, verified download and digest, against an http.server on 127.0.0.1: a
mismatch leaves nothing, a body is bounded, a 503 is tried again, a silent server times out."""
from __future__ import annotations

import hashlib
import http.server
import os
import socket
import threading
import time

import pytest

from builder.core import net
from builder.core.errors import MirrorError

DATA = os.urandom(200_000)          # several of net.CHUNK
SHA = hashlib.sha256(DATA).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    hits: dict[str, int]
    agents: list[str]
    release: threading.Event

    def do_GET(self) -> None:   # noqa: N802 - http.server's name
        n = self.hits[self.path] = self.hits.get(self.path, 0) + 1
        self.agents.append(self.headers.get("User-Agent", ""))
        if self.path == "/stall":
            self.release.wait(30)
            return
        if self.path == "/down" or (self.path == "/flaky" and n == 1):
            self.send_error(503)
            return
        if self.path == "/endless":
            self.send_response(200)
            self.end_headers()
            while not self.release.is_set():
                try:
                    self.wfile.write(b"x" * 65536)
                except OSError:
                    return
            return
        body = {"/file": DATA, "/flaky": DATA, "/longer": DATA + b"tail"}.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self) -> None:   # noqa: N802 - the name http.server calls
        self.send_response(200 if self.path == "/file" else 404)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    handler = type("H", (_Handler,), {"hits": {}, "agents": [], "release": threading.Event()})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    srv.handler = handler
    try:
        yield srv
    finally:
        handler.release.set()
        srv.shutdown()
        srv.server_close()
        t.join(10)


def test_get_returns_the_body_with_imgbuilds_user_agent(server):
    assert net.get(server.url + "/file") == DATA
    assert server.handler.agents == [net.USER_AGENT] and net.USER_AGENT.startswith("imgbuild/")


def test_get_names_the_url_and_the_status(server):
    with pytest.raises(MirrorError) as e:
        net.get(server.url + "/missing", status_hint="check it")
    assert str(e.value) == f"{server.url}/missing: HTTP 404" and e.value.hint == "check it"
    assert server.handler.hits["/missing"] == 1        # a 404 is an answer: not tried again


def test_a_503_is_tried_again(server):
    assert net.get(server.url + "/flaky") == DATA
    assert server.handler.hits["/flaky"] == 2


def test_a_lasting_503_fails_after_the_retries(server):
    t = time.monotonic()
    with pytest.raises(MirrorError, match=r"/down: HTTP 503"):
        net.get(server.url + "/down")
    assert server.handler.hits["/down"] == 1 + net.RETRIES
    assert time.monotonic() - t < 10


def test_an_unreachable_server_names_the_url_and_what_happened(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    url = f"http://127.0.0.1:{port}/x"
    t = time.monotonic()
    with pytest.raises(MirrorError, match=f"cannot reach {url}: ConnectionError") as e:
        net.get(url, hint="check the network")
    assert e.value.hint == "check the network"
    with pytest.raises(MirrorError, match=f"cannot download {url}: ConnectionError"):
        net.download(url, tmp_path / "x", "sha256", SHA)
    assert time.monotonic() - t < 10 and list(tmp_path.iterdir()) == []


def test_a_silent_server_times_out(server, monkeypatch):
    monkeypatch.setattr(net, "TIMEOUT", (1, 1))
    t = time.monotonic()
    with pytest.raises(MirrorError, match=r"cannot reach .*/stall: ReadTimeout"):
        net.get(server.url + "/stall")
    assert time.monotonic() - t < 5
    assert server.handler.hits["/stall"] == 1           # a read that timed out is not tried again


def test_the_default_timeout_bounds_connect_and_silence():
    connect, read = net.TIMEOUT
    assert 0 < connect <= 30 and 0 < read <= 60


def test_download_lands_whole_with_its_mode(server, tmp_path):
    seen = []
    dest = tmp_path / "f"
    assert net.download(server.url + "/file", dest, "sha256", SHA, len(DATA), mode=0o644, on_chunk=seen.append) \
        == len(DATA)
    assert dest.read_bytes() == DATA and dest.stat().st_mode & 0o777 == 0o644 and sum(seen) == len(DATA)
    assert os.listdir(tmp_path) == ["f"]


def test_a_digest_mismatch_leaves_nothing(server, tmp_path):
    with pytest.raises(net.Mismatch) as e:
        net.download(server.url + "/file", tmp_path / "f", "sha256", "ab" * 32)
    assert (e.value.expected, e.value.actual) == ("ab" * 32, SHA)
    assert server.url + "/file" in str(e.value) and SHA in str(e.value) and "ab" * 32 in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_a_body_past_its_size_is_refused_at_once_and_leaves_nothing(server, tmp_path):
    with pytest.raises(net.Mismatch, match=f"more than the {len(DATA)} bytes expected"):
        net.download(server.url + "/longer", tmp_path / "f", "sha256", SHA, len(DATA))
    with pytest.raises(net.Mismatch, match=f"{len(DATA)} bytes, not {len(DATA) + 1}"):
        net.download(server.url + "/file", tmp_path / "f", "sha256", SHA, len(DATA) + 1)
    with pytest.raises(net.Mismatch, match="more than"):
        net.get_verified(server.url + "/longer", "sha256", SHA, len(DATA))
    assert list(tmp_path.iterdir()) == []


def test_a_body_of_unknown_size_is_bounded(server, tmp_path, monkeypatch):
    monkeypatch.setattr(net, "MAX_BYTES", 1 << 20)
    with pytest.raises(MirrorError, match=f"/endless: more than {1 << 20} bytes; refused"):
        net.get(server.url + "/endless")
    with pytest.raises(MirrorError, match="more than"):
        net.download(server.url + "/endless", tmp_path / "f", "sha256", SHA)
    assert list(tmp_path.iterdir()) == []


def test_an_error_of_the_caller_midway_leaves_nothing(server, tmp_path):
    def stop(n: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        net.download(server.url + "/file", tmp_path / "f", "sha256", SHA, on_chunk=stop)
    with pytest.raises(MirrorError, match="HTTP 404"):
        net.download(server.url + "/missing", tmp_path / "f", "sha256", SHA)
    assert list(tmp_path.iterdir()) == []


def test_get_verified_returns_the_body_it_checked(server):
    assert net.get_verified(server.url + "/file", "sha1", hashlib.sha1(DATA).hexdigest()) == DATA
    with pytest.raises(net.Mismatch):
        net.get_verified(server.url + "/file", "sha256", "00" * 32)


def test_exists(server):
    assert net.exists(server.url + "/file")
    assert not net.exists(server.url + "/missing")
    assert not net.exists("http://127.0.0.1:9/x")


@pytest.mark.parametrize("algo", ["sha256", "sha1", "md5", "sha512"])
def test_file_digest(tmp_path, algo):
    p = tmp_path / "f"
    p.write_bytes(DATA * 30)      # several MB: read in chunks
    assert net.file_digest(p, algo) == hashlib.new(algo, DATA * 30).hexdigest()
    assert net.file_digest(str(p)) == hashlib.sha256(DATA * 30).hexdigest()
