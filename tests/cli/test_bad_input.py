"""Bad input to every command of `imgbuild` and `migrate` exits 2 with an `error:` line that names what is at
fault (the file, key, option or host), no traceback and no "internal error", and writes nothing anywhere.

Each case runs the real console script in a directory of its own, with TMPDIR, HOME, the cache, the inventory
and (where the command has one) --lxcpath, --stage and --inventory pointing into it, so "nothing written" is a
snapshot of that directory before and after; the host's /var/lib/lxc, /var/lib/imgbuild and root's ~/.ssh are
compared too. Remote commands get inputs that are refused before any connection; their host is 127.0.0.1 on a
port nothing listens on (added to each case that gives no --port), so a refusal that came only after trying to
connect would say "cannot connect" and not name the option, and no traffic leaves loopback. No case builds
anything; each has a timeout (a fifo or /dev/zero as an input must not hang) and a bound on its memory.
"""
from __future__ import annotations

import json
import os
import resource
import socket
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from tests.conftest import BIN

HOST = "127.0.0.1"               # on closed_port(): nothing here may get as far as connecting
REMOTE = {"push", "status", "chroot-install", "chroot-start", "chroot-stop", "chroot-status", "chroot-enable",
          "chroot-disable", "xen", "xen-bridge"}
TIMEOUT = 30                     # a case that hangs fails instead of stalling the suite (each takes < 5 s)
GOOD = "name: good\ndistro: debian\nrelease: bookworm\n"
GLOBAL = [Path("/var/lib/lxc"), Path("/var/lib/imgbuild"), Path("/root/.ssh")]
MEMORY = 4 << 30                 # address space of a case: reading /dev/zero whole fails instead of taking the host's


# ------------------------------------------------------------------ the inputs, made in the case's directory


def write(rel: str, data: str | bytes) -> Callable[[Path], None]:
    def setup(d: Path) -> None:
        p = d / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        (p.write_bytes if isinstance(data, bytes) else p.write_text)(data)
    return setup


def both(*setups: Callable[[Path], None]) -> Callable[[Path], None]:
    def setup(d: Path) -> None:
        for s in setups:
            s(d)
    return setup


def mkdir(rel: str) -> Callable[[Path], None]:
    return lambda d: (d / rel).mkdir(parents=True, exist_ok=True)


def fifo(rel: str) -> Callable[[Path], None]:
    return lambda d: os.mkfifo(d / rel)


def symlink(rel: str, to: str) -> Callable[[Path], None]:
    return lambda d: (d / rel).symlink_to(to)


def output(rel: str = "out/tiny", manifest: object | bytes | None = None, nodes: object | bytes | None = None,
           ) -> Callable[[Path], None]:
    """An imgbuild output as a build leaves it (manifest.json, lxc.conf, a tarball), with manifest.json or
    nodes.json replaced by the given value (bytes as they are, anything else as JSON)."""
    def setup(d: Path) -> None:
        o = d / rel
        (o / "t").mkdir(parents=True)
        (o / "t/etc").mkdir()
        (o / "t/etc/hostname").write_text("tiny\n")
        subprocess.run(["tar", "-C", str(o / "t"), "-cf", str(o / "tiny.tar"), "."], check=True)
        subprocess.run(["rm", "-rf", str(o / "t")], check=True)
        (o / "lxc.conf").write_text("lxc.uts.name = tiny\nlxc.rootfs.path = dir:/var/lib/lxc/tiny/rootfs\n")
        m = manifest if manifest is not None else {
            "name": "tiny", "hostname": "tiny", "source_date_epoch": 0,
            "artifacts": [{"kind": "lxc-config", "path": "lxc.conf"}, {"kind": "tarball", "path": "tiny.tar"}]}
        (o / "manifest.json").write_bytes(m if isinstance(m, bytes) else json.dumps(m).encode())
        if nodes is not None:
            (o / "nodes.json").write_bytes(nodes if isinstance(nodes, bytes) else json.dumps(nodes).encode())
    return setup


def guest(rel: str = "guest", templates: str | None = "[]\n", variables: str | bytes | None = None,
          ) -> Callable[[Path], None]:
    """A root directory guest (host name g1, one address) with imgbuild's templates.yml and vars.yml."""
    def setup(d: Path) -> None:
        g = d / rel
        (g / "etc/network").mkdir(parents=True)
        (g / "etc/hostname").write_text("g1\n")
        (g / "etc/hosts").write_text("127.0.0.1 localhost\n10.0.3.9 g1\n")
        (g / "etc/network/interfaces").write_text("auto eth0\niface eth0 inet static\n    address 10.0.3.9/24\n")
        if templates is not None:
            write(f"{rel}/etc/imgbuild/templates.yml", templates)(d)
        if variables is not None:
            write(f"{rel}/etc/imgbuild/vars.yml", variables)(d)
    return setup


def container(name: str = "vm0") -> Callable[[Path], None]:
    """An LXC container NAME in DIR/lxc (a config and a rootfs with a host name)."""
    def setup(d: Path) -> None:
        c = d / "lxc" / name
        guest(f"lxc/{name}/rootfs")(d)
        (c / "config").write_text(f"lxc.uts.name = {name}\nlxc.rootfs.path = dir:{c}/rootfs\n"
                                  "lxc.net.0.type = veth\nlxc.net.0.hwaddr = 00:16:3e:00:09:09\n")
    return setup


XM = ("name = 'www'\nmemory = 512\nbootloader = 'pygrub'\ndisk = ['file:/var/xen/www.img,xvda,w']\n"
      "vif = ['mac=00:16:3e:00:00:01, bridge=xenbr0']\n")
LXC_GOOD = GOOD + "targets: {tarball: {}, lxc: {}}\n"


# ------------------------------------------------------------------ the cases


@dataclass
class Case:
    id: str
    argv: tuple[str, ...]       # "imgbuild" or "migrate", then its arguments; {d} is the case's directory
    names: str                  # the error: line names this (the file, key, option or host at fault)
    setup: Callable[[Path], None] | None = None
    xfail: str | None = None    # reason, for a case fixed elsewhere (non-strict: it may already pass)
    env: tuple[tuple[str, str], ...] = ()    # extra environment ({d} replaced)
    timeout: float = TIMEOUT


def C(id: str, line: str | tuple[str, ...], names: str, setup=None, xfail=None, env=None, timeout=TIMEOUT) -> Case:
    return Case(id, tuple(line.split()) if isinstance(line, str) else line, names, setup, xfail,
                tuple((env or {}).items()), timeout)


LXC = ("--lxcpath", "{d}/lxc")
INV = ("--inventory", "{d}/inv.yml")
WHERE = (*LXC, *INV, "--xen-dir", "{d}/xen", "--vz-dir", "{d}/vz")

ITEM14 = [
    # recipes that are not text, not UTF-8, or not finite
    C("build-binary-recipe", "imgbuild build {d}/bin.yml -o {d}/out", "bin.yml",
      write("bin.yml", b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x03\0>\0")),
    C("validate-binary-recipe", "imgbuild validate --offline {d}/bin.yml", "bin.yml",
      write("bin.yml", bytes(range(256)) * 4)),
    C("build-non-utf8-recipe", "imgbuild {d}/latin1.yml -o {d}/out", "latin1.yml",
      write("latin1.yml", GOOD.encode() + b"hostname: caf\xe9\n")),
    C("validate-self-alias", "imgbuild validate --offline {d}/alias.yml", "alias.yml",
      write("alias.yml", GOOD + "vars: &a {x: *a}\n")),
    C("build-self-alias-list", "imgbuild build {d}/alias.yml -o {d}/out", "alias.yml",
      write("alias.yml", GOOD + "dns: &a [*a]\n")),
    C("build-extends-cycle", "imgbuild build {d}/a.yml -o {d}/out", "extends",
      both(write("a.yml", "extends: b.yml\nname: a\n"), write("b.yml", "extends: a.yml\n" + GOOD))),
    C("validate-extends-itself", "imgbuild validate --offline {d}/self.yml", "self.yml",
      write("self.yml", "extends: self.yml\n" + GOOD)),
    # files an earlier run left
    C("install-lxc-manifest-list", ("imgbuild", "install-lxc", "{d}/out/tiny", *LXC, *INV), "manifest.json",
      output(manifest=[1, 2, 3])),
    C("install-lxc-manifest-artifacts-string", ("imgbuild", "install-lxc", "{d}/out/tiny", *LXC, *INV),
      "manifest.json", output(manifest={"name": "tiny", "artifacts": "tiny.tar"})),
    C("install-lxc-manifest-artifact-not-object", ("imgbuild", "install-lxc", "{d}/out/tiny", *LXC, *INV),
      "manifest.json", output(manifest={"name": "tiny", "artifacts": [1, None]})),
    C("install-lxc-manifest-name-number", ("imgbuild", "install-lxc", "{d}/out/tiny", *LXC, *INV), "manifest.json",
      output(manifest={"name": 7, "artifacts": []})),
    C("install-lxc-nodes-garbage", ("imgbuild", "install-lxc", "{d}/out/tiny", *LXC, *INV), "nodes.json",
      output(nodes=b"\x00\xffgarbage{{")),
    C("install-lxc-nodes-wrong-shape", ("imgbuild", "install-lxc", "{d}/out/tiny", *LXC, *INV), "nodes.json",
      output(nodes={"nodes": "galera1"})),
    # clone: --set values, names, lxc: names
    C("clone-set-unclosed-list", ("imgbuild", "clone", "{d}/guest", "{d}/copy", "--set", "a=[", *WHERE), "--set a",
      guest()),
    C("clone-name-shell", ("imgbuild", "clone", "{d}/guest", "x;$(id)", *WHERE), "x;$(id)", guest()),
    C("clone-lxc-dotdot", ("imgbuild", "clone", "lxc:../../etc", "copy", *WHERE), "lxc:../../etc"),
    # a guest's own imgbuild files
    C("reidentify-vars-list", ("migrate", "reidentify", "{d}/guest", "--hostname", "g2", *WHERE), "vars.yml",
      guest(variables="- a\n- b\n")),
    C("clone-vars-list", ("imgbuild", "clone", "{d}/guest", "{d}/copy", *WHERE), "vars.yml",
      guest(variables="- a\n")),
    C("reidentify-templates-mode-zz", ("migrate", "reidentify", "{d}/guest", "--hostname", "g2", "--dry-run", *WHERE),
      "templates.yml: [0].mode", guest(templates="- {path: /etc/x, template: /usr/share/imgbuild/templates/x.j2, "
                                      "mode: zz, uid: 0, gid: 0}\n")),
    # a config that is one deeply nested expression
    C("convert-xen-unary-minus", "migrate convert-xen {d}/deep.cfg -o {d}/new.cfg", "deep.cfg",
      write("deep.cfg", "memory = " + "-" * 100_000 + "1\n")),
    # click's own usage errors
    C("usage-unknown-option", "imgbuild build --bogus {d}/x.yml", "--bogus"),
    C("usage-missing-argument", "imgbuild install-lxc", "OUTPUT"),
    C("usage-migrate-missing-option", f"migrate push {HOST}", "--dest"),
    C("usage-migrate-unknown-command", "migrate frobnicate", "frobnicate"),
    C("usage-bad-choice", "migrate convert-lxc {d}/c --to ancient", "--to"),
]

OWN = [
    # build: the recipe path and -o
    C("build-recipe-is-directory", "imgbuild build {d}/dir.yml -o {d}/out", "dir.yml", mkdir("dir.yml")),
    C("build-recipe-is-fifo", "imgbuild build {d}/fifo.yml -o {d}/out", "fifo.yml", fifo("fifo.yml"), timeout=10),
    C("build-recipe-dev-zero", "imgbuild build /dev/zero -o {d}/out", "/dev/zero", timeout=10),
    C("validate-recipe-dev-zero", "imgbuild validate --offline /dev/zero", "/dev/zero", timeout=10),
    C("build-recipe-links-to-dev-zero", "imgbuild build {d}/link.yml -o {d}/out", "link.yml",
      symlink("link.yml", "/dev/zero"), timeout=10),
    C("build-recipe-missing", "imgbuild build {d}/missing.yml -o {d}/out", "missing.yml"),
    C("build-recipe-huge-line", "imgbuild build {d}/huge.yml -o {d}/out", "huge.yml",
      write("huge.yml", GOOD + "hostname: " + "a" * (20 << 20) + "\n")),
    C("build-output-empty", ("imgbuild", "build", "{d}/good.yml", "-o", ""), "-o", write("good.yml", GOOD)),
    C("build-output-is-file", "imgbuild build {d}/good.yml -o {d}/afile", "afile",
      both(write("good.yml", GOOD), write("afile", "x"))),
    C("build-output-under-file", "imgbuild build {d}/good.yml -o {d}/afile/sub", "afile",
      both(write("good.yml", GOOD), write("afile", "x"))),
    C("build-set-bad-key-path", ("imgbuild", "build", "{d}/good.yml", "-o", "{d}/out", "--set", "network..x=1"),
      "network..x", write("good.yml", GOOD)),
    C("build-set-unknown-key", ("imgbuild", "build", "{d}/good.yml", "-o", "{d}/out", "--set", "bogus.key=1"),
      "bogus", write("good.yml", GOOD)),
    C("build-unknown-target-option", "imgbuild build {d}/t.yml -o {d}/out", "targets.tarball.bogus",
      write("t.yml", GOOD + "targets:\n  tarball: {bogus: 99}\n")),
    C("build-unknown-target", "imgbuild build {d}/t.yml -o {d}/out", "targets.vmdk",
      write("t.yml", GOOD + "targets:\n  vmdk: {}\n")),
    C("build-install-lxc-lxcpath-file", "imgbuild build {d}/good.yml -o {d}/out --install-lxc --lxcpath {d}/afile",
      "afile", both(write("good.yml", LXC_GOOD), write("afile", "x"))),
    C("build-install-lxc-no-lxc-target", "imgbuild build {d}/good.yml -o {d}/out --install-lxc --lxcpath {d}/lxc",
      "--install-lxc", write("good.yml", GOOD)),
    C("build-recipe-huge-value", "imgbuild build {d}/big.yml -o {d}/out", "hostname",
      write("big.yml", GOOD + "hostname: " + "a" * (6 << 20) + "\n")),
    C("build-extends-missing", "imgbuild build {d}/e.yml -o {d}/out", "nothere.yml",
      write("e.yml", "extends: nothere.yml\n" + GOOD)),
    C("build-extends-dev-zero", "imgbuild build {d}/e.yml -o {d}/out", "/dev/zero",
      write("e.yml", "extends: /dev/zero\n" + GOOD), timeout=10),
    C("build-files-source-missing", "imgbuild build {d}/f.yml -o {d}/out", "files[0].source",
      write("f.yml", GOOD + "files:\n  - {path: /etc/x, source: nothere}\n")),
    C("build-recipe-deep-nesting", "imgbuild build {d}/deep.yml -o {d}/out", "deep.yml",
      write("deep.yml", GOOD + "vars: {x: " + "[" * 5000 + "]" * 5000 + "}\n")),
    # validate and schema
    C("validate-recipe-is-directory", "imgbuild validate --offline {d}", "{d}"),
    C("validate-recipe-list-not-mapping", "imgbuild validate --offline {d}/l.yml", "l.yml", write("l.yml", "- a\n")),
    C("schema-extra-argument", "imgbuild schema extra", "extra"),
    C("schema-unknown-option", "imgbuild schema --json", "--json"),
    # cache
    C("cache-prune-bad-size", "imgbuild cache prune --max-size lots", "--max-size"),
    C("cache-prune-negative-size", "imgbuild cache prune --max-size -5G", "--max-size"),
    C("cache-list-extra-argument", "imgbuild cache list everything", "everything"),
    C("cache-list-cache-is-file", "imgbuild cache list", "IMGBUILD_CACHE", write("afile", "x"),
      env={"IMGBUILD_CACHE": "{d}/afile"}),
    C("cache-prune-cache-is-file", "imgbuild cache prune --all", "IMGBUILD_CACHE", write("afile", "x"),
      env={"IMGBUILD_CACHE": "{d}/afile"}),
    C("build-cache-is-file", "imgbuild build {d}/good.yml -o {d}/out", "IMGBUILD_CACHE",
      both(write("good.yml", GOOD), write("afile", "x")), env={"IMGBUILD_CACHE": "{d}/afile"}),
    C("build-bad-cache-max", "imgbuild build {d}/good.yml -o {d}/out", "IMGBUILD_CACHE_MAX", write("good.yml", GOOD),
      env={"IMGBUILD_CACHE_MAX": "4 gigs"}),
    C("build-bad-packages-max", "imgbuild build {d}/good.yml -o {d}/out --no-cache", "IMGBUILD_PACKAGES_MAX",
      write("good.yml", GOOD), env={"IMGBUILD_PACKAGES_MAX": "-1"}),
    C("cache-prune-bad-env-size", "imgbuild cache prune", "IMGBUILD_CACHE_MAX", env={"IMGBUILD_CACHE_MAX": "lots"}),
    # install-lxc
    C("install-lxc-not-an-output", ("imgbuild", "install-lxc", "{d}/empty", *LXC, *INV), "empty", mkdir("empty")),
    C("install-lxc-lxcpath-is-file", "imgbuild install-lxc {d}/out/tiny --lxcpath {d}/afile", "afile",
      both(output(), write("afile", "x"))),
    C("install-lxc-name-dotdot", ("imgbuild", "install-lxc", "{d}/out/tiny", "--name", "../x", *LXC, *INV), "../x",
      output()),
    C("install-lxc-manifest-binary", ("imgbuild", "install-lxc", "{d}/out/tiny", *LXC, *INV), "manifest.json",
      output(manifest=b"\x89PNG\r\n\x1a\n\0\0")),
    C("install-lxc-config-no-rootfs", ("imgbuild", "install-lxc", "{d}/out/tiny", *LXC, *INV), "lxc.conf",
      both(output(), write("out/tiny/lxc.conf", "lxc.uts.name = tiny\n"))),
    C("install-lxc-identity-taken", ("imgbuild", "install-lxc", "{d}/out/tiny", "--name", "vm2", *LXC, *INV),
      "00:16:3e:00:09:09", both(output(), write("out/tiny/lxc.conf", "lxc.uts.name = tiny\nlxc.rootfs.path = "
                                                "dir:/var/lib/lxc/tiny/rootfs\nlxc.net.0.type = veth\n"
                                                "lxc.net.0.hwaddr = 00:16:3e:00:09:09\n"),
                                container("vm1"), lambda d: (d / "lxc/vm1").rename(d / "vm1"),
                                lambda d: write("inv.yml", "guests:\n- {name: vm1, hostname: vm1, ips: [], "
                                                "macs: ['00:16:3e:00:09:09'], where: 'lxc:" + str(d / "vm1") +
                                                "'}\n")(d))),
    C("install-lxc-lxcpath-empty", ("imgbuild", "install-lxc", "{d}/out/tiny", "--lxcpath", "", *INV), "--lxcpath",
      output()),
    C("install-lxc-node-not-cluster", ("imgbuild", "install-lxc", "{d}/out/tiny", "--node", "n1", *LXC, *INV),
      "--node", output()),
    # clone
    C("clone-src-missing", ("imgbuild", "clone", "{d}/nothere", "copy", *WHERE), "nothere"),
    C("clone-ip-nonsense", ("imgbuild", "clone", "{d}/guest", "{d}/copy", "--ip", "10.0.3.9=nonsense", *WHERE),
      "--ip 10.0.3.9=nonsense", guest()),
    C("clone-mac-bad", ("imgbuild", "clone", "{d}/guest", "{d}/copy", "--mac", "zz:zz=auto", *WHERE), "--mac",
      guest()),
    C("clone-hostname-bad", ("imgbuild", "clone", "{d}/guest", "{d}/copy", "--hostname", "a b", *WHERE),
      "--hostname", guest()),
    C("clone-name-newline", ("imgbuild", "clone", "lxc:vm0", "vm1\nx", *WHERE), "clone name", container()),
    C("clone-file-relative", ("imgbuild", "clone", "{d}/guest", "{d}/copy", "--file", "../../etc/passwd", *WHERE),
      "--file", guest()),
    C("clone-into-missing-directory", ("imgbuild", "clone", "{d}/guest", "{d}/no/such/copy", "--ip",
                                       "10.0.3.9=10.0.3.10", *WHERE), "no/such", guest()),
    C("clone-inventory-empty", ("imgbuild", "clone", "{d}/guest", "{d}/copy", *LXC, "--inventory", ""),
      "--inventory", guest()),
    C("clone-lxc-absolute", ("imgbuild", "clone", "lxc:/etc", "copy", *WHERE), "lxc:/etc"),
    # reidentify
    C("reidentify-ip-nonsense", ("migrate", "reidentify", "{d}/guest", "--ip", "1.2.3.4=nonsense", *WHERE),
      "--ip 1.2.3.4=nonsense", guest()),
    C("reidentify-mac-bad", ("migrate", "reidentify", "{d}/guest", "--mac", "00:16:3e:00:00:01=nonsense", *WHERE),
      "--mac", guest()),
    C("reidentify-file-missing", ("migrate", "reidentify", "{d}/guest", "--file", "/etc/nothere.conf", *WHERE),
      "/etc/nothere.conf", guest()),
    C("reidentify-target-dev-zero", ("migrate", "reidentify", "/dev/zero", "--hostname", "g2", *WHERE), "/dev/zero"),
    C("reidentify-gateway-other-version", ("migrate", "reidentify", "{d}/guest", "--ip", "10.0.3.9=10.0.3.10@::1",
                                           *WHERE), "--ip 10.0.3.9=10.0.3.10@::1", guest()),
    C("reidentify-ip-twice", ("migrate", "reidentify", "{d}/guest", "--ip", "10.0.3.9=10.0.3.10", "--ip",
                              "10.0.3.9=10.0.3.11", *WHERE), "10.0.3.9", guest()),
    C("clone-mac-twice", ("imgbuild", "clone", "{d}/guest", "{d}/copy", "--mac", "00:16:3e:00:00:01=auto", "--mac",
                          "00:16:3e:00:00:01=00:16:3e:00:00:02", *WHERE), "00:16:3e:00:00:01", guest()),
    C("reidentify-set-bad-name", ("migrate", "reidentify", "{d}/guest", "--set", "a-b=1", *WHERE), "--set a-b=1",
      guest()),
    C("reidentify-xen-cfg-is-directory", ("migrate", "reidentify", "{d}/www.cfg", "--hostname", "w2", *WHERE),
      "www.cfg", mkdir("www.cfg")),
    C("reidentify-xen-cfg-binary", ("migrate", "reidentify", "{d}/www.cfg", "--hostname", "w2", *WHERE), "www.cfg",
      write("www.cfg", b"\0\x01\x02disk = ['file:/x.img,xvda,w']\xff\n")),
    C("reidentify-vars-binary", ("migrate", "reidentify", "{d}/guest", "--hostname", "g2", *WHERE), "vars.yml",
      guest(variables=b"\0\0\xff")),
    C("reidentify-templates-escape", ("migrate", "reidentify", "{d}/guest", "--hostname", "g2", *WHERE),
      "templates.yml: [0].template", guest(templates="- {path: /etc/x, template: /usr/share/imgbuild/templates/"
                                                     "../../../../etc/shadow, mode: '0644', uid: 0, gid: 0}\n")),
    C("reidentify-lxc-missing", ("migrate", "reidentify", "lxc:nothere", "--hostname", "g2", *WHERE), "lxc:nothere"),
    C("reidentify-vz-bad-ctid", ("migrate", "reidentify", "vz:../1", "--hostname", "g2", *WHERE), "vz:../1"),
    C("reidentify-lxc-config-latin1", ("migrate", "reidentify", "lxc:vm0", "--hostname", "g2", *WHERE), "config",
      both(container(), write("lxc/vm0/config", b"# caf\xe9\nlxc.uts.name = vm0\n"))),
    C("clone-lxc-config-binary", ("imgbuild", "clone", "lxc:vm0", "vm1", *WHERE), "config",
      both(container(), write("lxc/vm0/config", b"\0\0\0lxc.uts.name = vm0\n"))),
    C("reidentify-inventory-dev-zero", ("migrate", "reidentify", "{d}/guest", "--hostname", "g2", *LXC,
                                        "--inventory", "/dev/zero"), "/dev/zero", guest(), timeout=10),
    C("reidentify-inventory-garbage", ("migrate", "reidentify", "{d}/guest", "--hostname", "g2", *WHERE),
      "inv.yml", both(guest(), write("inv.yml", "guests: [a: b: c\n"))),
    # convert-lxc and convert-xen
    C("convert-lxc-binary", "migrate convert-lxc {d}/bin --to modern", "bin", write("bin", b"\0\x01\x02ELF")),
    C("convert-lxc-missing", "migrate convert-lxc {d}/nothere --to modern", "nothere"),
    C("convert-lxc-directory", "migrate convert-lxc {d} --to modern", "{d}"),
    C("convert-lxc-output-missing-dir", "migrate convert-lxc {d}/c --to modern -o {d}/no/such/out", "out",
      write("c", "lxc.utsname = vm0\n")),
    C("convert-lxc-fifo", "migrate convert-lxc {d}/fifo --to modern", "fifo", fifo("fifo"),
      timeout=10),
    C("convert-xen-fifo", "migrate convert-xen {d}/fifo.cfg", "fifo.cfg", fifo("fifo.cfg"),
      timeout=10),
    C("convert-xen-directory", "migrate convert-xen {d}/dir.cfg", "dir.cfg", mkdir("dir.cfg")),
    C("convert-xen-binary", "migrate convert-xen {d}/b.cfg", "b.cfg", write("b.cfg", b"\x7fELF\0\0\xff")),
    C("convert-xen-output-missing-dir", "migrate convert-xen {d}/www.cfg -o {d}/no/such/www.cfg", "www.cfg",
      write("www.cfg", XM)),
    C("convert-xen-bad-disk-map", "migrate convert-xen {d}/www.cfg --disk-map /var/xen", "--disk-map",
      write("www.cfg", XM)),
    # migrate push: everything refused before connecting
    C("push-port-out-of-range", f"migrate push {HOST} --dest /usr/local/newos --port 70000", "--port"),
    C("push-host-with-spaces", ("migrate", "push", "bad host", "--dest", "/usr/local/newos", "--source", "{d}"),
      "bad host"),
    C("push-host-option-like", ("migrate", "push", "--dest", "/usr/local/newos", "--", "-oProxyCommand=id"),
      "-oProxyCommand"),
    C("push-dest-relative", ("migrate", "push", HOST, "--dest", "newos", "--source", "{d}"), "--dest"),
    C("push-dest-system-dir", ("migrate", "push", HOST, "--dest", "/usr/lib", "--source", "{d}"), "/usr/lib"),
    C("push-profile-missing", ("migrate", "push", HOST, "--dest", "/usr/local/newos", "--source", "{d}",
                               "--profile", "nothere"), "nothere"),
    C("push-source-missing", ("migrate", "push", HOST, "--dest", "/usr/local/newos", "--source", "{d}/nothere"),
      "nothere"),
    C("push-ssh-option-newline", ("migrate", "push", HOST, "--dest", "/usr/local/newos", "--source", "{d}",
                                  "--ssh-option", "ConnectTimeout=5\nProxyCommand=id"), "ssh"),
    C("push-ssh-option-unknown", ("migrate", "push", HOST, "--dest", "/usr/local/newos", "--source", "{d}",
                                  "--ssh-option", "NoSuchOption=1"), "ssh"),
    C("push-ssh-config-fifo", ("migrate", "push", HOST, "--dest", "/usr/local/newos", "--source", "{d}",
                               "--ssh-config", "{d}/fifo"), "--ssh-config", fifo("fifo"), timeout=10),
    C("push-ssh-config-dev-zero", ("migrate", "push", HOST, "--dest", "/usr/local/newos", "--source", "{d}",
                                   "--ssh-config", "/dev/zero"), "--ssh-config", timeout=10),
    C("push-identity-fifo", ("migrate", "push", HOST, "--dest", "/usr/local/newos", "--source", "{d}", "-i",
                             "{d}/fifo"), "-i", fifo("fifo"), timeout=10),
    C("push-ssh-config-bad-line", ("migrate", "push", HOST, "--dest", "/usr/local/newos", "--source", "{d}",
                                   "--ssh-config", "{d}/cfg"), "cfg", write("cfg", "Host *\n  Bogus yes\n")),
    C("push-files-from-binary", ("migrate", "push", HOST, "--dest", "/usr/local/newos", "--source", "{d}/src",
                                 "--files-from", "{d}/list"), "list",
      both(mkdir("src"), write("list", b"\0\xff\xfe"))),
    C("push-source-empty", ("migrate", "push", HOST, "--dest", "/usr/local/newos", "--source", ""), "--source"),
    C("push-profile-empty", ("migrate", "push", HOST, "--dest", "/usr/local/newos", "--source", "{d}", "--profile",
                             ""), "--profile"),
    C("push-bwlimit-zero", ("migrate", "push", HOST, "--dest", "/usr/local/newos", "--bwlimit", "0"), "--bwlimit"),
    # chroot-*
    C("chroot-install-dest-empty", ("migrate", "chroot-install", HOST, "--dest", ""), "--dest"),
    C("chroot-install-service-shell", ("migrate", "chroot-install", HOST, "--dest", "/usr/local/newos", "--service",
                                       "ssh;id"), "--service"),
    C("chroot-install-hostname-bad", ("migrate", "chroot-install", HOST, "--dest", "/usr/local/newos", "--hostname",
                                      "a$(id)"), "--hostname"),
    C("chroot-start-dest-root", ("migrate", "chroot-start", HOST, "--dest", "/"), "--dest"),
    C("chroot-start-wait-zero", ("migrate", "chroot-start", HOST, "--dest", "/usr/local/newos", "--wait", "0"),
      "--wait"),
    C("chroot-stop-dest-relative", ("migrate", "chroot-stop", HOST, "--dest", "usr/local/newos"), "--dest"),
    C("chroot-status-host-spaces", ("migrate", "chroot-status", "a host", "--dest", "/usr/local/newos"), "a host"),
    C("chroot-enable-via-bogus", ("migrate", "chroot-enable", HOST, "--dest", "/usr/local/newos", "--via", "cron"),
      "--via"),
    C("chroot-disable-dest-etc", ("migrate", "chroot-disable", HOST, "--dest", "/etc/newos"), "/etc/newos"),
    C("chroot-stop-dest-newline", ("migrate", "chroot-stop", HOST, "--dest", "/usr/local/a\nb"), "--dest"),
    C("chroot-start-hosts-option", ("migrate", "chroot-start", "--hosts", "a,-oProxyCommand=x", "--dest",
                                    "/usr/local/newos"), "-oProxyCommand"),
    C("chroot-install-host-and-hosts", ("migrate", "chroot-install", HOST, "--hosts", "a,b", "--dest",
                                        "/usr/local/newos"), "--hosts"),
    # status
    C("status-dest-relative", ("migrate", "status", HOST, "--dest", "srv/os"), "--dest"),
    C("status-lxcpath-dotdot", ("migrate", "status", HOST, "--lxcpath", "/var/lib/../../etc"), "--lxcpath"),
    C("status-hosts-file-missing", ("migrate", "status", "--hosts", "@{d}/nope.txt"), "nope.txt"),
    # xen and xen-bridge
    C("xen-bridge-hosts-spaces", ("migrate", "xen-bridge", "--hosts", "a,b c", "-o", "{d}/out"), "b c"),
    C("xen-disk-map-no-equals", ("migrate", "xen", HOST, "www", "--to", HOST, "--disk-map", "/var/xen",
                                 "--stage", "{d}/stage", *INV), "--disk-map"),
    C("xen-disk-map-relative", ("migrate", "xen", HOST, "www", "--to", HOST, "--disk-map", "xen=/srv",
                                "--stage", "{d}/stage", *INV), "--disk-map"),
    C("xen-guest-path", ("migrate", "xen", HOST, "../www", "--to", HOST, "--stage", "{d}/stage", *INV),
      "../www"),
    C("xen-xen-dir-relative", ("migrate", "xen", HOST, "www", "--to", HOST, "--xen-dir", "etc/xen",
                               "--stage", "{d}/stage", *INV), "--xen-dir"),
    C("xen-ip-nonsense", ("migrate", "xen", HOST, "www", "--to", HOST, "--ip", "1.2.3.4=nonsense",
                          "--stage", "{d}/stage", *INV), "--ip"),
    C("xen-ip-twice", ("migrate", "xen", HOST, "www", "--to", HOST, "--ip", "1.2.3.4=1.2.3.5", "--ip",
                       "1.2.3.4=1.2.3.6", "--stage", "{d}/stage", *INV), "1.2.3.4"),
    C("xen-to-host-spaces", ("migrate", "xen", HOST, "www", "--to", "other host", "--stage", "{d}/stage", *INV),
      "other host"),
    C("xen-stage-is-file", ("migrate", "xen", HOST, "www", "--to", HOST, "--stage", "{d}/afile", *INV),
      "afile", write("afile", "x")),
    C("xen-bridge-iface-shell", ("migrate", "xen-bridge", HOST, "--iface", "eth0$(id)", "-o", "{d}/review"),
      "--iface"),
    C("xen-bridge-output-under-file", ("migrate", "xen-bridge", HOST, "-o", "{d}/afile/review"), "afile",
      write("afile", "x")),
    C("xen-stage-under-file", ("migrate", "xen", HOST, "www", "--to", HOST, "--stage",
                               "{d}/afile/stage", *INV), "--stage", write("afile", "x")),
    C("xen-stage-empty", ("migrate", "xen", HOST, "www", "--to", HOST, "--stage", "", *INV), "--stage"),
    C("xen-bridge-output-empty", ("migrate", "xen-bridge", HOST, "-o", ""), "-o"),
    C("xen-bridge-xen-dir-empty", ("migrate", "xen-bridge", HOST, "--xen-dir", "", "-o", "{d}/review"),
      "--xen-dir"),
    C("xen-bridge-output-file", ("migrate", "xen-bridge", HOST, "-o", "{d}/afile"), "afile", write("afile", "x")),
    C("xen-bridge-xen-dir-relative", ("migrate", "xen-bridge", HOST, "--xen-dir", "xen", "-o", "{d}/review"),
      "--xen-dir"),
    C("xen-bridge-bridge-too-long", ("migrate", "xen-bridge", HOST, "--bridge", "x" * 20, "-o", "{d}/review"),
      "--bridge"),
]

CASES = ITEM14 + OWN


# ------------------------------------------------------------------ running a case


def _state(p: Path) -> tuple:
    """What a write would change: type and mode; a file's size and mtime; a link's target. (A directory's
    mtime is left out: a temporary file made and removed again, as a partial install is, leaves nothing.)"""
    st = p.lstat()
    if stat.S_ISDIR(st.st_mode):
        return (st.st_mode,)
    return (st.st_mode, st.st_size, st.st_mtime_ns, os.readlink(p) if stat.S_ISLNK(st.st_mode) else None)


def snapshot(*roots: Path) -> dict[str, tuple]:
    """Every path under roots (not following links), each with _state."""
    out: dict[str, tuple] = {}
    for r in roots:
        if not os.path.lexists(r):
            continue
        out[str(r)] = _state(r)
        for dirpath, dirnames, filenames in os.walk(r):
            for n in dirnames + filenames:
                out[str(Path(dirpath) / n)] = _state(Path(dirpath) / n)
    return out


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed again)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_case(case: Case, d: Path) -> subprocess.CompletedProcess:
    for sub in ("tmp", "home", "cache"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    if case.setup:
        case.setup(d)
    argv = [a.replace("{d}", str(d)) for a in case.argv]
    if argv[0] == "migrate" and len(argv) > 1 and argv[1] in REMOTE and "--port" not in argv:
        argv[2:2] = ["--port", str(closed_port())]
    env = {**os.environ, "TMPDIR": str(d / "tmp"), "HOME": str(d / "home"), "IMGBUILD_CACHE": str(d / "cache"),
           "SOURCE_DATE_EPOCH": "0", **{k: v.replace("{d}", str(d)) for k, v in case.env}}
    watched = [d, Path(os.environ["IMGBUILD_INVENTORY"]).parent, *GLOBAL]
    before = snapshot(*watched)
    try:
        r = subprocess.run([str(BIN / argv[0]), *argv[1:]], cwd=d, env=env, capture_output=True,
                           timeout=case.timeout, stdin=subprocess.DEVNULL,
                           preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY)))
    except subprocess.TimeoutExpired:
        pytest.fail(f"{' '.join(argv)}: still running after {case.timeout} s (it must refuse, not hang)")
    out = subprocess.CompletedProcess(r.args, r.returncode, r.stdout.decode(errors="replace"),
                                      r.stderr.decode(errors="replace"))
    after = snapshot(*watched)
    changed = sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))
    out.changed = changed
    return out


def check_refused(case: Case, r, d: Path) -> str:
    """The contract: exit 2, an error: line naming what is at fault, no traceback, nothing written.
    Returns the first error: line."""
    said = f"\nexit status {r.returncode}\nstdout:\n{r.stdout[-3000:]}\nstderr:\n{r.stderr[-3000:]}"
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, said
    assert "cannot connect" not in r.stderr and "ssh failed" not in r.stderr, said
    assert r.returncode == 2, said
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert errors, said
    names = case.names.replace("{d}", str(d))
    lines = r.stderr.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("error:"))
    block = []                  # the error: line and the problem lines under it, up to its hint:
    for line in lines[start:]:
        if line.startswith("hint:"):
            break
        block.append(line)
    assert names in "\n".join(block), f"the error does not name {names!r}:{said}"
    assert not r.changed, f"written: {r.changed}{said}"
    assert len(r.stderr) < 16000, f"{len(r.stderr)} characters on stderr: a value is shown whole{said}"
    return errors[0]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=[pytest.mark.xfail(reason=c.xfail, strict=False)]
                                               if c.xfail else []) for c in CASES])
def test_bad_input_exits_2_naming_it_and_writes_nothing(case, tmp_path):
    d = tmp_path / "case"
    d.mkdir()
    r = run_case(case, d)
    check_refused(case, r, d)


def test_there_are_enough_cases_across_every_command():
    """Item 14's cases, and at least 20 more spread over every command."""
    assert len(OWN) >= 20
    commands = {(c.argv[0], c.argv[1]) for c in CASES}
    every = {("imgbuild", c) for c in ("build", "validate", "schema", "cache", "install-lxc", "clone")} | {
        ("migrate", c) for c in ("push", "status", "chroot-install", "chroot-start", "chroot-stop", "chroot-status",
                                 "chroot-enable", "chroot-disable", "xen", "xen-bridge", "reidentify",
                                 "convert-lxc", "convert-xen")}
    assert every <= commands, every - commands


# ------------------------------------------------------------------ validate goes on past a bad recipe


def test_validate_reports_a_cycle_and_still_validates_the_others(tmp_path):
    """`imgbuild validate good.yml cycle.yml good2.yml`: both good recipes are validated (and said ok), the
    cycle is reported naming the recipes in it, exit 2, nothing written."""
    d = tmp_path / "case"
    d.mkdir()
    case = C("validate-cycle-among-good", "imgbuild validate --offline {d}/good.yml {d}/cycle.yml {d}/good2.yml",
             "cycle.yml", both(write("good.yml", GOOD), write("good2.yml", GOOD.replace("good", "good2")),
                               write("cycle.yml", "extends: other.yml\nname: c\n"),
                               write("other.yml", "extends: cycle.yml\n" + GOOD)))
    r = run_case(case, d)
    check_refused(case, r, d)
    assert f"{d}/good.yml: ok" in r.stdout and f"{d}/good2.yml: ok" in r.stdout, r.stdout
    assert f"{d}/cycle.yml: invalid" in r.stderr and "cycle" in r.stderr, r.stderr


# ------------------------------------------------------------------ --help renders everywhere

HELP = [("imgbuild",), ("imgbuild", "build"), ("imgbuild", "validate"), ("imgbuild", "schema"),
        ("imgbuild", "cache"), ("imgbuild", "cache", "list"), ("imgbuild", "cache", "prune"),
        ("imgbuild", "install-lxc"), ("imgbuild", "clone"), ("migrate",)] + [
    ("migrate", c) for c in ("push", "status", "chroot-install", "chroot-start", "chroot-stop", "chroot-status",
                             "chroot-enable", "chroot-disable", "xen", "xen-bridge", "reidentify", "convert-lxc",
                             "convert-xen")]


def test_help_of_every_command_renders():
    for cmd in HELP:
        r = subprocess.run([str(BIN / cmd[0]), *cmd[1:], "--help"], capture_output=True, text=True, timeout=TIMEOUT)
        assert r.returncode == 0 and not r.stderr, (cmd, r.stderr)
        assert r.stdout.startswith("Usage: ") and " ".join(cmd) in r.stdout.splitlines()[0], (cmd, r.stdout)
        assert "Options:" in r.stdout and "--help" in r.stdout, (cmd, r.stdout)
