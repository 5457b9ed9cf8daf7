"""The one way to fetch and to hash: an HTTP GET, a verified download, a file's digest.

One policy for every request (Debian indexes and packages, EL repodata and packages, GPG keys):
- TIMEOUT: 10 s to connect, then at most 60 s of silence while waiting for or reading a response. A body that
  keeps coming is never cut off by time (a large package on a slow line is fine); one that stops is.
- Retries: a connection that cannot be made, and HTTP 502, 503 and 504 (a mirror restarting, a proxy in
  front of an overloaded one), are tried again twice: at once, then 1 s later. A server's Retry-After is not
  obeyed (a mirror cannot make a build wait for hours). A read that times out or a body that breaks off is not
  retried: the error names the URL, and a rerun resumes from the caches.
- One User-Agent: imgbuild/VERSION.
- No body without a bound: one whose size is known is refused as soon as it passes that size, any other at
  MAX_BYTES.

A verified download is written to a temp file beside its destination (.part-PID-RANDOM-NAME, the temps the
package cache's prune knows), hashed while it streams and renamed into place only when its size and digest
are the expected ones; on any failure (a mismatch, the network, Ctrl-C) nothing of it is left.

requests is imported by the first request, so that hashing a file does not cost its import.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from builder import __version__
from builder.core.errors import MirrorError

if TYPE_CHECKING:
    import requests

TIMEOUT = (10, 60)             # (connect, read) seconds
RETRIES = 2                    # further tries of a failed connection or a 502/503/504
BACKOFF = 0.5                  # urllib3's backoff factor: the second retry waits 1 s
RETRY_STATUS = (502, 503, 504)
MAX_BYTES = 1 << 30            # a body of unknown size, in memory or on disk
CHUNK = 1 << 16                # bytes per read while streaming (progress and Ctrl-C are seen this often)
USER_AGENT = f"imgbuild/{__version__}"

UNREACHABLE_HINT = "check the mirror URL and the network"
STATUS_HINT = "check the mirror URL"


class Mismatch(MirrorError):
    """A download whose size or digest is not the expected one; nothing of it was kept. actual is the digest
    of what came, or what was wrong with its size."""

    def __init__(self, url: str, algo: str, expected: str, actual: str):
        super().__init__(f"{url}: checksum mismatch ({algo}): expected {expected}, the file has {actual}",
                         "the mirror may be syncing or tampered with; retry later or use another mirror")
        self.url, self.algo, self.expected, self.actual = url, algo, expected, actual


def file_digest(path: Path | str, algo: str = "sha256") -> str:
    """The hex digest of a file's content (any hashlib name), read in chunks."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algo).hexdigest()


def open_session(pool: int = 10) -> "requests.Session":
    """A requests Session with the retry policy and the User-Agent; pool is the number of connections it keeps
    per host (the number of threads sharing it)."""
    import requests
    from urllib3.util.retry import Retry

    retry = Retry(total=RETRIES, connect=RETRIES, read=False, status=RETRIES, other=0, backoff_factor=BACKOFF,
                  status_forcelist=RETRY_STATUS, allowed_methods=frozenset({"GET", "HEAD"}), raise_on_status=False,
                  respect_retry_after_header=False)
    s = requests.Session()
    s.headers["User-Agent"] = USER_AGENT
    for scheme in ("http://", "https://"):
        s.mount(scheme, requests.adapters.HTTPAdapter(max_retries=retry, pool_maxsize=pool))
    return s


@contextlib.contextmanager
def _response(url: str, session: "requests.Session | None", verb: str, hint: str, status_hint: str
              ) -> Iterator["requests.Response"]:
    """The streamed 200 response of a GET (MirrorError "URL: HTTP CODE" for any other), closed on the way out;
    an error of the network, also one while the body is read, becomes MirrorError "cannot VERB URL: WHAT"."""
    import requests

    s = session or open_session(1)
    try:
        with s.get(url, timeout=TIMEOUT, stream=True) as r:
            if r.status_code != 200:
                raise MirrorError(f"{url}: HTTP {r.status_code}", status_hint)
            yield r
    except requests.RequestException as e:
        raise MirrorError(f"cannot {verb} {url}: {e.__class__.__name__}", hint) from None
    finally:
        if session is None:
            s.close()


class _Body:
    """A response's body read into write, counted, and hashed when a digest is expected: at most the expected
    size (Mismatch past it), else MAX_BYTES."""

    def __init__(self, url: str, want: tuple[str, str] | None, size: int | None):
        self.url, self.want, self.size, self.n = url, want, size, 0
        self.h = hashlib.new(want[0]) if want else None

    def read(self, r: "requests.Response", write: Callable[[bytes], object],
             on_chunk: Callable[[int], object] | None = None) -> None:
        bound = MAX_BYTES if self.size is None else self.size
        for block in r.iter_content(CHUNK):
            self.n += len(block)
            if self.n > bound:
                if self.size is None or self.want is None:
                    raise MirrorError(f"{self.url}: more than {bound} bytes; refused",
                                      "the URL does not serve what was asked for; check it")
                raise Mismatch(self.url, *self.want, f"more than the {self.size} bytes expected")
            if on_chunk is not None:
                on_chunk(len(block))
            write(block)
            if self.h is not None:
                self.h.update(block)

    def check(self) -> None:
        """Mismatch unless the whole body had the expected size and digest."""
        if self.want is None or self.h is None:
            return
        if self.size is not None and self.n != self.size:
            raise Mismatch(self.url, *self.want, f"{self.n} bytes, not {self.size}")
        if self.h.hexdigest() != self.want[1].lower():
            raise Mismatch(self.url, *self.want, self.h.hexdigest())


def get(url: str, *, session: "requests.Session | None" = None, hint: str = UNREACHABLE_HINT,
        status_hint: str = STATUS_HINT) -> bytes:
    """The body of url (at most MAX_BYTES); MirrorError "cannot reach URL: WHAT" or "URL: HTTP CODE"."""
    out = bytearray()
    with _response(url, session, "reach", hint, status_hint) as r:
        _Body(url, None, None).read(r, out.extend)
    return bytes(out)


def get_verified(url: str, algo: str, digest: str, size: int | None = None, *,
                 session: "requests.Session | None" = None, hint: str = UNREACHABLE_HINT,
                 status_hint: str = STATUS_HINT) -> bytes:
    """The body of url, which must have this digest (algo: any hashlib name) and size, when given: Mismatch
    otherwise (as soon as it passes the size); the errors of get() else."""
    out = bytearray()
    body = _Body(url, (algo, digest), size)
    with _response(url, session, "reach", hint, status_hint) as r:
        body.read(r, out.extend)
    body.check()
    return bytes(out)


def exists(url: str, *, session: "requests.Session | None" = None) -> bool:
    """Whether a HEAD of url (redirects followed) answers 200; False also when the server cannot be reached."""
    import requests

    s = session or open_session(1)
    try:
        return s.head(url, timeout=TIMEOUT, allow_redirects=True).status_code == 200
    except requests.RequestException:
        return False
    finally:
        if session is None:
            s.close()


def temp_beside(dest: Path) -> Path:
    """A temp name in dest's directory, unique to this writer (builds in separate pid namespaces can share a
    pid): .part-PID-RANDOM-NAME."""
    return dest.with_name(f".part-{os.getpid()}-{secrets.token_hex(8)}-{dest.name}")


def download(url: str, dest: Path, algo: str, digest: str, size: int | None = None, *,
             session: "requests.Session | None" = None, mode: int | None = None,
             on_chunk: Callable[[int], object] | None = None, hint: str = UNREACHABLE_HINT,
             status_hint: str = STATUS_HINT) -> int:
    """url into dest, verified: streamed into a temp file beside dest, hashed (algo: any hashlib name) on the
    way, renamed to dest only when its digest and size (when given) are the expected ones; its mode is then
    mode (else 0600). on_chunk(n) is called before each block is written (a progress bar; it may raise to
    stop). Returns the size. MirrorError "cannot download URL: WHAT", "URL: HTTP CODE" or Mismatch; OSError
    when the directory cannot be written. Nothing is left behind on any error."""
    tmp = temp_beside(dest)
    body = _Body(url, (algo, digest), size)
    try:
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
            with _response(url, session, "download", hint, status_hint) as r:
                body.read(r, f.write, on_chunk)
        body.check()
        if mode is not None:
            os.chmod(tmp, mode)
        os.rename(tmp, dest)
        return body.n
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
