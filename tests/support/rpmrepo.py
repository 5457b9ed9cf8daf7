"""A tiny, real, signed EL-like RPM distribution ("testos" 6, x86_64), built by the tests themselves.

No CentOS mirror is reachable from the test machines, so the dnf/rpm-native code paths are tested against this:

    build_repo(dest) -> RepoInfo       # dest/6/os/x86_64 (+ comps groups) and dest/6/updates/x86_64
    serve(directory) -> ctx manager    # yields "http://127.0.0.1:PORT" (ThreadingHTTPServer in a thread)
    corrupt_copy(info, dest) -> Path   # a copy where one rpm's bytes no longer match repodata's sha256

Layout (like a CentOS vault mirror)::

    dest/6/os/x86_64/Packages/*.rpm         testos-release, -base, -tools 2.0, -net, -extra, -broken
    dest/6/os/x86_64/repodata/              createrepo_c -g comps.xml (groups "core" and "base")
    dest/6/os/x86_64/RPM-GPG-KEY-testos     the armored public key (also shipped in testos-release)
    dest/6/updates/x86_64/Packages/*.rpm    testos-tools 2.1 ("newest wins" across repos)
    dest/6/updates/x86_64/repodata/

Payloads are gzip, xz and zstd across the set (see PAYLOADS); every package is signed (v4 header signature plus
the v3 header+payload one, like real EL6 packages) with a throwaway RSA key made for this build.

Nothing outside `dest` is changed: rpmbuild/rpmsign/gpg run with a private HOME (so no ~/.rpmmacros or ~/.rpmdb is
read or written), `--nodeps` (no rpmdb is opened), %_tmppath in the work dir, and a private GNUPGHOME whose gpg-agent
is killed before the temporary directory (tempfile's dir, named TMP_PREFIX + pid + "-...") is removed.

Also here: primary_packages(repo_dir) parses repodata's primary.xml; throwaway_public_key() makes an unrelated key
(for "wrong key" tests); DnfRoot runs the host's dnf/rpm on an install root with a private HOME whose .rpmmacros
sets %_dbpath /var/lib/rpm (Debian's rpm otherwise keeps a root's database at ~/.rpmdb, even for `rpm -qp`).
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import gzip
import hashlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

RELEASEVER = "6"
ARCH = "x86_64"
KEY_NAME = "RPM-GPG-KEY-testos"
TMP_PREFIX = "rpmrepo-"          # temp dirs are TMP_PREFIX + pid + "-..." (tests look for leftovers)
TOOLS = ("rpmbuild", "rpmsign", "createrepo_c", "gpg", "gpgconf")
BUSYBOX = Path("/bin/busybox")
# Applets symlinked to busybox in testos-base (/bin/sh itself is a copy of the binary).
BUSYBOX_APPLETS = ("ls", "cat", "echo", "mkdir", "rm", "cp", "mv", "ln", "chmod", "chown", "grep", "sed", "true",
                   "false", "test", "id", "stat", "readlink", "sleep", "env", "touch", "uname", "head")
PAYLOADS = {"gzip": "w9.gzdio", "xz": "w6.xzdio", "zstd": "w19.zstdio"}
# Besides _topdir and _tmppath (set per build), these make builds fast and independent of the host's rpm config.
RPMBUILD_DEFINES = {
    "__os_install_post": "%{nil}",     # no brp-strip of the (static, already stripped) busybox etc.
    "__arch_install_post": "%{nil}",
    "debug_package": "%{nil}",
    "_build_id_links": "none",         # no /usr/lib/.build-id/* entries for busybox
    "_buildhost": "build.testos.invalid",
}


def missing_tools() -> list[str]:
    """Host programs build_repo needs that are not installed (normally none: scripts/setup.sh installs them)."""
    out = [t for t in TOOLS if not shutil.which(t)]
    if not BUSYBOX.is_file():
        out.append(f"{BUSYBOX} (busybox-static)")
    return out


# --------------------------------------------------------------------------------------------------- packages
@dataclass
class _Pkg:
    name: str
    version: str
    release: str
    arch: str                      # "noarch" or ARCH
    repo: str                      # "os" or "updates"
    payload: str                   # key of PAYLOADS
    summary: str
    files: str                     # the %files section body
    # relpath -> str/bytes content | ("symlink", target) | ("hardlink", other relpath) | ("dir",)
    tree: dict = field(default_factory=dict)
    requires: tuple = ()
    provides: tuple = ()
    post: str | None = None

    @property
    def filename(self) -> str:
        return f"{self.name}-{self.version}-{self.release}.{self.arch}.rpm"


def _repo_file(key_url: str) -> str:
    def section(sid: str, title: str, repo: str, enabled: int) -> str:
        return (f"[{sid}]\n"
                f"name=TestOS $releasever - {title}\n"
                f"mirrorlist=http://mirrorlist.testos.invalid/?release=$releasever&arch=$basearch&repo={repo}\n"
                f"#baseurl=http://mirror.testos.invalid/testos/$releasever/{repo}/$basearch/\n"
                f"gpgcheck=1\n"
                f"enabled={enabled}\n"
                f"gpgkey={key_url}\n")
    return "\n".join([section("base", "Base", "os", 1), section("updates", "Updates", "updates", 1),
                      section("extras", "Extras", "extras", 0)])


def _packages(pubkey: str) -> list[_Pkg]:
    busybox = BUSYBOX.read_bytes()
    base_tree: dict = {"bin/busybox": busybox, "bin/sh": busybox}
    base_tree.update({f"bin/{a}": ("symlink", "busybox") for a in BUSYBOX_APPLETS})
    base_tree.update({
        "etc/passwd": "root:x:0:0:root:/root:/bin/sh\n"
                      "daemonuser:x:321:654:TestOS daemon:/var/lib/testos:/sbin/nologin\n",
        "etc/group": "root:x:0:\ndaemongrp:x:654:daemonuser\n",
        "etc/shadow": "root:*:19000:0:99999:7:::\ndaemonuser:!!:19000::::::\n",
        **{d: ("dir",) for d in ("etc", "var", "var/lib", "var/log", "tmp", "root", "usr", "usr/bin", "usr/lib",
                                 "usr/share", "sbin", "bin")},
    })
    def tools_tree(v: str) -> dict:
        return {
            "etc/testos/tools.conf": f"# testos-tools {v} configuration\nverbose=0\n",
            "usr/bin/tool": f"#!/bin/sh\necho \"testos tool {v}\"\n",
            "usr/bin/sutool": f"#!/bin/sh\necho \"testos sutool {v}\"\n",
            "usr/bin/tool-link": ("symlink", "tool"),
            "usr/lib/testos/a": f"hardlinked data {v}\n",
            "usr/lib/testos/b": ("hardlink", "usr/lib/testos/a"),
            "var/lib/testos/owned": "owned by daemonuser:daemongrp\n",
            "var/lib/testos/state": "",  # %ghost: listed in the package, never installed
        }

    tools_files = """\
%dir /etc/testos
%config(noreplace) /etc/testos/tools.conf
/usr/bin/tool
%attr(4755,root,root) /usr/bin/sutool
/usr/bin/tool-link
%dir /usr/lib/testos
/usr/lib/testos/a
/usr/lib/testos/b
%dir /var/lib/testos
%attr(0640,daemonuser,daemongrp) /var/lib/testos/owned
%ghost %attr(0600,root,root) /var/lib/testos/state
"""

    def tools(v: str, repo: str, payload: str) -> _Pkg:
        return _Pkg("testos-tools", v, "1", ARCH, repo, payload, "TestOS tools", tools_files, tools_tree(v),
                    requires=("testos-base >= 1.0", "/bin/sh"), provides=(f"testos-toolkit = {v}",),
                    post="echo %{version} > /var/lib/testos/post-ran\n")

    return [
        _Pkg("testos-release", RELEASEVER, "1", "noarch", "os", "gzip", "TestOS release files", """\
/etc/testos-release
/etc/system-release
%dir /etc/yum.repos.d
%config(noreplace) /etc/yum.repos.d/testos.repo
%dir /etc/pki
%dir /etc/pki/rpm-gpg
/etc/pki/rpm-gpg/RPM-GPG-KEY-testos
""", {"etc/testos-release": f"TestOS release {RELEASEVER}.10 (Final)\n",
      "etc/system-release": ("symlink", "testos-release"),
      "etc/yum.repos.d/testos.repo": _repo_file(f"file:///etc/pki/rpm-gpg/{KEY_NAME}"),
      f"etc/pki/rpm-gpg/{KEY_NAME}": pubkey},
            provides=(f"system-release = {RELEASEVER}", f"system-release(releasever) = {RELEASEVER}",
                      f"testos-release = {RELEASEVER}")),
        _Pkg("testos-base", "1.0", "1", ARCH, "os", "gzip", "TestOS base system (busybox, users)", """\
%dir /bin
/bin/busybox
/bin/sh
""" + "".join(f"/bin/{a}\n" for a in BUSYBOX_APPLETS) + """\
%dir /etc
/etc/passwd
/etc/group
%attr(0000,root,root) /etc/shadow
%dir /var
%dir /var/lib
%dir /var/log
%dir %attr(1777,root,root) /tmp
%dir %attr(0550,root,root) /root
%dir /usr
%dir /usr/bin
%dir /usr/lib
%dir /usr/share
%dir /sbin
""", base_tree),
        tools("2.0", "os", "xz"),
        tools("2.1", "updates", "zstd"),
        _Pkg("testos-net", "1.0", "1", "noarch", "os", "zstd", "TestOS networking", """\
%config(noreplace) /etc/testos/net.conf
""", {"etc/testos/net.conf": "# testos-net\nhostname=testos\n"},
            requires=("testos-tools", "testos-toolkit >= 2")),
        _Pkg("testos-extra", "1.0", "1", "noarch", "os", "xz", "TestOS extra files (in no group)", """\
%dir /usr/share/testos
/usr/share/testos/extra.txt
""", {"usr/share/testos/extra.txt": "extra\n"}),
        _Pkg("testos-broken", "1.0", "1", "noarch", "os", "gzip", "TestOS package with a missing dependency", """\
%dir /usr/share/testos-broken
/usr/share/testos-broken/README
""", {"usr/share/testos-broken/README": "requires does-not-exist-anywhere\n"},
            requires=("does-not-exist-anywhere",)),
    ]


GROUPS = {  # id -> (name, [(package, type)])
    "core": ("Core", [("testos-base", "mandatory"), ("testos-tools", "mandatory")]),
    "base": ("Base", [("testos-net", "mandatory"), ("testos-extra", "default")]),
}


def _comps_xml() -> str:
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           '<!DOCTYPE comps PUBLIC "-//Red Hat, Inc.//DTD Comps info//EN" "comps.dtd">', "<comps>"]
    for gid, (name, reqs) in GROUPS.items():
        out += ["  <group>", f"    <id>{gid}</id>", f"    <name>{name}</name>",
                f"    <description>TestOS {name} group</description>", "    <default>true</default>",
                "    <uservisible>true</uservisible>", "    <packagelist>"]
        out += [f'      <packagereq type="{t}">{p}</packagereq>' for p, t in reqs]
        out += ["    </packagelist>", "  </group>"]
    out += ["  <category>", "    <id>base-system</id>", "    <name>Base System</name>",
            "    <description>TestOS base system</description>", "    <display_order>10</display_order>",
            "    <grouplist>"] + [f"      <groupid>{g}</groupid>" for g in GROUPS] + [
            "    </grouplist>", "  </category>", "</comps>", ""]
    return "\n".join(out)


def _spec(p: _Pkg) -> str:
    lines = [f"Name: {p.name}", f"Version: {p.version}", f"Release: {p.release}", f"Summary: {p.summary}",
             "License: MIT", "URL: http://testos.invalid/"]
    if p.arch == "noarch":
        lines.append("BuildArch: noarch")
    lines += [f"Requires: {r}" for r in p.requires] + [f"Provides: {r}" for r in p.provides]
    lines += ["", "%description", f"{p.summary}. Generated by imgbuild's tests/support/rpmrepo.py.", "",
              "%prep", "%build", "", "%install", "rm -rf %{buildroot}", "mkdir -p %{buildroot}",
              # One cp -a: keeps symlinks and the hardlink pair (same inode) as they are in the source tree.
              "cp -a %{_sourcedir}/tree/. %{buildroot}/", ""]
    if p.post:
        lines += ["%post", p.post]
    lines += ["%files", "%defattr(-,root,root,-)", p.files.rstrip("\n"), "",
              "%changelog", f"* Mon Jan 01 2024 TestOS Builder <builder@testos.invalid> - {p.version}-{p.release}",
              "- Generated test package", ""]
    return "\n".join(lines)


def _write_tree(root: Path, tree: dict) -> None:
    root.mkdir(parents=True)
    for rel, what in sorted(tree.items(), key=lambda kv: isinstance(kv[1], tuple) and kv[1][0] == "hardlink"):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(what, tuple):
            kind = what[0]
            if kind == "dir":
                path.mkdir(exist_ok=True)
            elif kind == "symlink":
                path.symlink_to(what[1])
            elif kind == "hardlink":
                os.link(root / what[1], path)
            else:
                raise ValueError(kind)
        else:
            path.write_bytes(what if isinstance(what, bytes) else what.encode())
            path.chmod(0o755 if rel.startswith(("bin/", "usr/bin/")) else 0o644)


# ------------------------------------------------------------------------------------------------------ tools
def _run(cmd: list[str], env: dict, timeout: float = 120, cwd: Path | None = None) -> str:
    r = subprocess.run([str(c) for c in cmd], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    return r.stdout


def _defines(d: dict) -> list[str]:
    return [a for k, v in d.items() for a in ("--define", f"{k} {v}")]


def _gen_key(gnupghome: Path, env: dict, uid: tuple[str, str, str] = ("TestOS Signing Key", "throwaway test key",
                                                                    "security@testos.invalid")) -> tuple[str, str]:
    """A passphrase-less RSA signing key in gnupghome; returns (fingerprint, armored public key)."""
    params = gnupghome / "keyparams"
    params.write_text("Key-Type: RSA\nKey-Length: 2048\nKey-Usage: sign\n"
                      f"Name-Real: {uid[0]}\nName-Comment: {uid[1]}\nName-Email: {uid[2]}\n"
                      "Expire-Date: 0\n%no-protection\n%commit\n")
    _run(["gpg", "--batch", "--quiet", "--gen-key", params], env)
    cols = _run(["gpg", "--batch", "--with-colons", "--fingerprint", "--list-secret-keys"], env)
    fpr = next(line.split(":")[9] for line in cols.splitlines() if line.startswith("fpr:"))
    armored = _run(["gpg", "--batch", "--armor", "--export", fpr], env)
    return fpr, armored


@contextlib.contextmanager
def _workdir() -> Iterator[tuple[Path, Path, dict]]:
    """(work dir, GNUPGHOME, env with a private HOME); the gpg-agent is killed and everything removed on exit."""
    work = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-"))
    gnupghome = work / "gnupg"          # short path: gpg-agent's socket lives here
    gnupghome.mkdir(mode=0o700)
    home = work / "home"
    home.mkdir()
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "HOME": str(home),
           "GNUPGHOME": str(gnupghome), "LC_ALL": "C", "TZ": "UTC", "TMPDIR": str(work)}
    try:
        yield work, gnupghome, env
    finally:
        subprocess.run(["gpgconf", "--homedir", str(gnupghome), "--kill", "all"], env=env, capture_output=True,
                       timeout=30, stdin=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)


def throwaway_public_key() -> tuple[str, str]:
    """Another, unrelated signing key: (fingerprint, armored public key), e.g. to prove a wrong key is refused."""
    with _workdir() as (_, gnupghome, env):
        return _gen_key(gnupghome, env, ("Unrelated Key", "not the testos key", "other@testos.invalid"))


def _rpmbuild(p: _Pkg, work: Path, env: dict) -> Path:
    top = work / f"top-{p.name}-{p.version}"
    (top / "SPECS").mkdir(parents=True)
    _write_tree(top / "SOURCES" / "tree", p.tree)
    spec = top / "SPECS" / f"{p.name}.spec"
    spec.write_text(_spec(p))
    _run(["rpmbuild", "-bb", "--nodeps", "--quiet", "--target", p.arch,
          *_defines({"_topdir": top, "_tmppath": work, **RPMBUILD_DEFINES,
                     "_binary_payload": PAYLOADS[p.payload]}), spec], env)
    rpm = top / "RPMS" / p.arch / p.filename
    if not rpm.is_file():
        raise RuntimeError(f"rpmbuild did not produce {rpm}: {sorted(map(str, (top / 'RPMS').rglob('*')))}")
    return rpm


# --------------------------------------------------------------------------------------------------- RepoInfo
PkgEntry = tuple[str, str, Path]  # (version, release, path of the .rpm)


@dataclass
class RepoInfo:
    """What build_repo made. Paths are absolute; `url` is set by whoever serves `root` (see serve())."""
    root: Path                                  # contains 6/os/x86_64 and 6/updates/x86_64
    key_path: Path                              # armored public key (== /etc/pki/rpm-gpg/RPM-GPG-KEY-testos)
    key_id: str                                 # long key id, 16 upper-case hex digits
    fingerprint: str
    packages: dict[str, PkgEntry]               # os repo: name -> (version, release, rpm path)
    updates: dict[str, PkgEntry]                # updates repo: name -> (version, release, rpm path)
    groups: dict[str, list[str]]                # comps group id -> package names (mandatory and default)
    group_types: dict[str, dict[str, str]]      # comps group id -> {package: "mandatory" | "default"}
    payloads: dict[str, str]                    # rpm file name -> "gzip" | "xz" | "zstd"
    releasever: str = RELEASEVER
    arch: str = ARCH
    url: str | None = None                      # e.g. http://127.0.0.1:PORT (the directory holding 6/)
    build_seconds: float = 0.0

    def repo_dir(self, repo: str = "os") -> Path:
        return self.root / self.releasever / repo / self.arch

    def baseurl(self, repo: str = "os") -> str:
        if not self.url:
            raise RuntimeError("RepoInfo.url is not set: serve the repo first")
        return f"{self.url.rstrip('/')}/{self.releasever}/{repo}/{self.arch}/"

    @property
    def key_url(self) -> str:
        return self.baseurl("os") + KEY_NAME

    @property
    def short_key_id(self) -> str:
        """As rpm names the imported key: gpg-pubkey-<this, lower case>-<creation time>."""
        return self.key_id[-8:].lower()

    def newest(self, name: str) -> PkgEntry:
        """The entry dnf/yum must pick for `name` with both repos enabled ("newest wins")."""
        return self.updates.get(name) or self.packages[name]

    def relpath(self, name: str, repo: str = "os") -> Path:
        """Path of a package's rpm relative to `root` (the same inside a corrupt_copy)."""
        return (self.packages if repo == "os" else self.updates)[name][2].relative_to(self.root)

    def rpms(self) -> list[Path]:
        return [e[2] for e in (*self.packages.values(), *self.updates.values())]

    def corrupt_copy(self, dest: Path, name: str = "testos-extra", repo: str = "os") -> Path:
        return corrupt_copy(self, dest, name=name, repo=repo)


# ---------------------------------------------------------------------------------------------------- build
def build_repo(dest: Path) -> RepoInfo:
    """Build the signed testos 6 distribution in `dest` (created if needed; must not hold a previous build)."""
    missing = missing_tools()
    if missing:
        raise RuntimeError(f"build_repo needs: {', '.join(missing)} (scripts/setup.sh installs them)")
    t0 = time.monotonic()
    dest = Path(dest).resolve()
    os_dir, upd_dir = (dest / RELEASEVER / r / ARCH for r in ("os", "updates"))
    if os_dir.exists() or upd_dir.exists():
        raise FileExistsError(f"{dest} already holds a repository")
    with _workdir() as (work, gnupghome, env):
        fpr, pubkey = _gen_key(gnupghome, env)
        pkgs = _packages(pubkey)
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as ex:
            built = dict(zip((id(p) for p in pkgs), ex.map(lambda p: _rpmbuild(p, work, env), pkgs)))
        for d in (os_dir, upd_dir):
            (d / "Packages").mkdir(parents=True)
        entries: dict[str, dict[str, PkgEntry]] = {"os": {}, "updates": {}}
        for p in pkgs:
            target = (os_dir if p.repo == "os" else upd_dir) / "Packages" / p.filename
            shutil.copyfile(built[id(p)], target)
            entries[p.repo][p.name] = (p.version, p.release, target)
        rpms = [e[2] for r in entries.values() for e in r.values()]
        _run(["rpmsign", "--addsign", "--rpmv3",
              *_defines({"_gpg_name": fpr, "_gpg_path": gnupghome, "__gpg": shutil.which("gpg"),
                         "_gpg_digest_algo": "sha256"}), *rpms], env)
        (os_dir / KEY_NAME).write_text(pubkey)
        comps = work / "comps.xml"
        comps.write_text(_comps_xml())
        _run(["createrepo_c", "--quiet", "-g", comps, os_dir], env)
        _run(["createrepo_c", "--quiet", upd_dir], env)
    return RepoInfo(
        root=dest, key_path=os_dir / KEY_NAME, key_id=fpr[-16:].upper(), fingerprint=fpr.upper(),
        packages=entries["os"], updates=entries["updates"],
        groups={g: [p for p, _ in reqs] for g, (_, reqs) in GROUPS.items()},
        group_types={g: dict(reqs) for g, (_, reqs) in GROUPS.items()},
        payloads={p.filename: p.payload for p in pkgs}, build_seconds=time.monotonic() - t0)


# -------------------------------------------------------------------------------------------------- repodata
def primary_packages(repo_dir: Path) -> dict[str, dict]:
    """Parse repodata/primary.xml(.gz) of one repo: location href -> {name, version, release, arch, sha256, size}."""
    ns = {"r": "http://linux.duke.edu/metadata/repo", "c": "http://linux.duke.edu/metadata/common"}
    repomd = ET.parse(Path(repo_dir) / "repodata" / "repomd.xml")
    href = repomd.find("r:data[@type='primary']/r:location", ns).get("href")
    raw = (Path(repo_dir) / href).read_bytes()
    root = ET.fromstring(gzip.decompress(raw) if href.endswith(".gz") else raw)
    out = {}
    for pkg in root.findall("c:package", ns):
        csum = pkg.find("c:checksum", ns)
        ver = pkg.find("c:version", ns)
        out[pkg.find("c:location", ns).get("href")] = {
            "name": pkg.findtext("c:name", namespaces=ns), "arch": pkg.findtext("c:arch", namespaces=ns),
            "version": ver.get("ver"), "release": ver.get("rel"), "checksum_type": csum.get("type"),
            "checksum": csum.text, "size": int(pkg.find("c:size", ns).get("package"))}
    return out


def corrupt_copy(info: RepoInfo, dest: Path, name: str = "testos-extra", repo: str = "os") -> Path:
    """Copy info.root to dest (which must not exist) and flip one byte of `name`'s rpm in `repo`.

    The file keeps its size (so only repodata's sha256 catches it); the byte is inside the compressed payload, so
    the rpm header still parses. Returns dest, the root of the copy; the damaged file is dest/info.relpath(name).
    """
    dest = Path(dest)
    shutil.copytree(info.root, dest, symlinks=True)
    target = dest / info.relpath(name, repo)
    data = bytearray(target.read_bytes())
    pos = len(data) - 64                     # the payload is the tail of an rpm
    data[pos] ^= 0xFF
    target.write_bytes(bytes(data))
    return dest


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------------------ serve
class _QuietHandler(SimpleHTTPRequestHandler):
    timeout = 30                             # a stuck client cannot keep a handler thread (and close) forever
    requests_log: list | None = None

    def log_message(self, format, *args):    # noqa: A002 - the stdlib's name
        pass

    def log_request(self, code="-", size="-"):
        if self.requests_log is not None:
            self.requests_log.append((self.command, self.path, int(code) if isinstance(code, int) else code))


class _Server(ThreadingHTTPServer):
    daemon_threads = False                   # server_close() joins the request threads
    block_on_close = True
    allow_reuse_address = True


@contextlib.contextmanager
def serve(directory: Path, log: list | None = None) -> Iterator[str]:
    """Serve `directory` over HTTP on 127.0.0.1 and a free port; yields the base URL ("http://127.0.0.1:PORT").

    If `log` is a list, (method, path, status) of each request is appended to it. On exit the server is shut
    down, its socket closed and its threads joined.
    """
    handler = functools.partial(type("Handler", (_QuietHandler,), {"requests_log": log}),
                                directory=str(directory))
    server = _Server(("127.0.0.1", 0), handler)
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name=f"rpmrepo-http-{port}", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=30)


def port_is_closed(url: str) -> bool:
    """True if nothing accepts connections at url's host:port any more."""
    m = re.match(r"https?://([^:/]+):(\d+)", url)
    try:
        with socket.create_connection((m.group(1), int(m.group(2))), timeout=2):
            return False
    except OSError:
        return True


# --------------------------------------------------------------------------------------- host dnf/rpm on a root
DNF_CONF = """[main]
gpgcheck=1
best=True
skip_if_unavailable=False
install_weak_deps=False
plugins=0
reposdir=/nonexistent
"""


class DnfRoot:
    """The host's dnf and rpm aimed at an install root, isolated from the host's own config and rpm database.

    HOME is a private directory whose .rpmmacros sets `%_dbpath /var/lib/rpm` (Debian's rpm would otherwise put
    the root's database at ~/.rpmdb), dnf reads its own dnf.conf (not the host's: no plugins, no reposdir,
    skip_if_unavailable off, best on), and repositories come only from --repofrompath.
    """

    def __init__(self, info: RepoInfo, root: Path, work: Path):
        self.info, self.root, self.work = info, Path(root), Path(work)
        self.home = self.work / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / ".rpmmacros").write_text("%_dbpath /var/lib/rpm\n")
        self.conf = self.work / "dnf.conf"
        self.conf.write_text(DNF_CONF)
        self.root.mkdir(parents=True, exist_ok=True)
        self.env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "HOME": str(self.home),
                    "LC_ALL": "C"}

    def run(self, *cmd, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([str(c) for c in cmd], env=self.env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def rpm(self, *args) -> subprocess.CompletedProcess:
        return self.run("rpm", "--root", self.root, "--dbpath", "/var/lib/rpm", *args)

    def import_key(self, path: Path | None = None) -> subprocess.CompletedProcess:
        return self.rpm("--import", path or self.info.key_path)

    def dnf(self, *args, repos: tuple[str, ...] = ("os", "updates"), url: str | None = None,
            gpgcheck: bool = True, gpgkey: str | None = None) -> subprocess.CompletedProcess:
        """dnf -y --installroot=ROOT --releasever=6 with the served repos `repos` (ids testos-os, testos-updates)."""
        base = (url or self.info.url or "").rstrip("/")
        if not base:
            raise RuntimeError("no URL: serve the repository first")
        cmd = ["dnf", "-y", f"--config={self.conf}", f"--installroot={self.root}",
               f"--releasever={self.info.releasever}"]
        for r in repos:
            rid = f"testos-{r}"
            cmd += [f"--repofrompath={rid},{base}/{self.info.releasever}/{r}/{self.info.arch}/", f"--repo={rid}",
                    f"--setopt={rid}.gpgcheck={int(gpgcheck)}"]
            if gpgkey:
                cmd.append(f"--setopt={rid}.gpgkey={gpgkey}")
        return self.run(*cmd, *args)

    def installed(self) -> set[str]:
        """NEVRAs in the root's rpm database, without gpg-pubkey entries."""
        r = self.rpm("-qa", "--qf", "%{NEVRA}\n")
        if r.returncode != 0:
            raise RuntimeError(f"rpm -qa failed: {r.stderr}")
        return {line for line in r.stdout.split() if not line.startswith("gpg-pubkey-")}
