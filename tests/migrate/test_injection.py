"""Shell metacharacters in every option of every remote command, against real hosts (tests/support/sshhost.py).

Each value is a payload that runs `touch MARKER` if it ever reaches a shell unquoted: `$(...)`, backticks, `;`
with a single or a double quote to break out of quoting, a newline, and `*`, a space and `|`. Every command must
either refuse the value (exit 2, `error:`, no traceback) or take it literally; and afterwards no marker exists,
neither here nor on any test host. Where a value is taken, the test also checks that it arrived as given (the
directory or file literally named so)."""
from __future__ import annotations

import concurrent.futures
import os
import re
import secrets
import subprocess
from pathlib import Path

import pytest

from tests.conftest import BIN
from tests.support.pushtree import DEST, make_tree
from tests.support.xenguest import OLD_IP

pytestmark = [pytest.mark.root]

MARKER = f"/tmp/ibs-pwn-{secrets.token_hex(4)}"
PAYLOADS = [
    f"x$(touch {MARKER})y",
    f"x`touch {MARKER}`y",
    f"x';touch {MARKER};'y",
    f'x";touch {MARKER};"y',
    f"x\ntouch {MARKER}\ny",
    f"x* y|touch {MARKER};",
]


def migrate(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "migrate"), *map(str, args)], capture_output=True, text=True, timeout=300)


def check(runs: list[tuple[str, list[str], subprocess.CompletedProcess]]) -> list[str]:
    """Problems: an exit that is neither 0 nor 2, exit 2 without `error:`, a traceback."""
    bad = []
    for what, _args, r in runs:
        if "Traceback" in r.stderr or r.returncode not in (0, 2) or \
                (r.returncode == 2 and not re.search(r"^(error|Error): ", r.stderr, re.M)):
            bad.append(f"{what}: exit {r.returncode}: {r.stderr.strip()[-400:]}")
    return bad


def run_all(cases: list[tuple[str, list[str]]]) -> list[tuple[str, list[str], subprocess.CompletedProcess]]:
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda c: migrate(c[1]), cases))
    return [(what, args, r) for (what, args), r in zip(cases, results)]


def variants(base: list[str], options: dict[str, str]) -> list[tuple[str, list[str]]]:
    """For each option (its value in `base` given as a placeholder `{OPT}`) and each payload: base with that one
    option's value replaced by the payload (with a prefix, e.g. making a path absolute)."""
    cases = []
    for opt, prefix in options.items():
        for p in PAYLOADS:
            args = [(prefix + p if a == f"{{{opt}}}" else a) for a in base]
            assert args != base, opt
            cases.append((f"{opt}={p!r}", [a if not (a.startswith("{") and a.endswith("}")) else
                                           DEFAULTS[a.strip("{}")] for a in args]))
    return cases


DEFAULTS: dict[str, str] = {}
SSH_SHARED = {"ssh-option": "", "ssh-config": "", "identity": "", "port": ""}


def ssh_part(host, alias: str | None = None) -> list[str]:
    DEFAULTS.update({"ssh-option": "ConnectTimeout=10", "ssh-config": str(host.ssh_config), "identity": str(host.key),
                     "port": "2222", "host": alias or host.alias})
    return ["{host}", "--ssh-config", "{ssh-config}", "-i", "{identity}", "--port", "{port}",
            "--ssh-option", "{ssh-option}"]


def no_marker(*hosts) -> None:
    assert not os.path.exists(MARKER), "a payload ran here"
    for h in hosts:
        assert not (h.root / MARKER.lstrip("/")).exists(), f"a payload ran on {h.alias}"


def test_push_and_chroot_commands(sshhost, tmp_path):
    source = make_tree(tmp_path / "src")
    for d in ("bin", "usr/local/sbin"):
        (source / d).mkdir(parents=True, exist_ok=True)
    assert migrate(["push", sshhost.alias, "--ssh-config", sshhost.ssh_config, "--dest", DEST, "--source", source]
                   ).returncode == 0
    assert migrate(["chroot-install", sshhost.alias, "--ssh-config", sshhost.ssh_config, "--dest", DEST]
                   ).returncode == 0
    listing = tmp_path / "list"
    listing.write_text("etc/app.conf\n")
    base_ssh = ssh_part(sshhost)
    DEFAULTS.update({"dest": DEST, "source": str(source), "exclude": "*.log", "protect": "/etc/app.conf",
                     "unprotect": "/etc/hosts", "rsync-path": "rsync", "bwlimit": "100000", "service": "ssh",
                     "hostname": "newos", "ssh-port": "22", "check-port": "2223", "wait": "1", "via": "rc.local",
                     "files-from": str(listing), "profile": "core"})
    cases = []
    push = ["push", *base_ssh, "--dest", "{dest}", "--source", "{source}", "--exclude", "{exclude}",
            "--protect", "{protect}", "--unprotect", "{unprotect}", "--rsync-path", "{rsync-path}",
            "--bwlimit", "{bwlimit}", "--dry-run"]
    cases += variants(push, {"host": "", **SSH_SHARED, "dest": "/srv/", "source": f"{tmp_path}/", "exclude": "",
                             "protect": "/etc/", "unprotect": "/etc/", "rsync-path": "", "bwlimit": ""})
    cases += variants(["push", *base_ssh, "--dest", "{dest}", "--source", "{source}", "--files-from", "{files-from}",
                       "--dry-run"], {"files-from": f"{tmp_path}/"})
    cases += variants(["push", *base_ssh, "--dest", "{dest}", "--source", "{source}", "--profile", "{profile}",
                       "--dry-run"], {"profile": ""})
    for cmd, extra in (("chroot-install", ["--service", "{service}", "--hostname", "{hostname}", "--ssh-port",
                                           "{ssh-port}", "--dry-run"]),
                       ("chroot-start", ["--check-port", "{check-port}", "--wait", "{wait}", "--dry-run"]),
                       ("chroot-stop", ["--dry-run"]), ("chroot-status", []),
                       ("chroot-enable", ["--via", "{via}", "--dry-run"]), ("chroot-disable", ["--dry-run"])):
        opts = {"host": "", **SSH_SHARED, "dest": "/srv/"}
        opts.update({a.strip("{}"): "" for a in extra if a.startswith("{")})
        cases += [(f"{cmd} {w}", a) for w, a in variants([cmd, *base_ssh, "--dest", "{dest}", *extra], opts)]
    before = (sshhost.root / DEST.lstrip("/") / "etc/app.conf").read_bytes()
    runs = run_all(cases)
    assert not check(runs), "\n".join(check(runs))
    no_marker(sshhost)
    taken = [(w, r) for w, _, r in runs if r.returncode == 0]
    # what may be taken literally: rsync patterns (--exclude, --protect, --unprotect) and the local paths and
    # tree paths they name; every remote path and every value that enters a remote script is refused otherwise
    assert {w.split("=")[0] for w, _ in taken} <= {"exclude", "protect", "unprotect"}, [w for w, _ in taken]
    assert len(taken) >= 10
    assert (sshhost.root / DEST.lstrip("/") / "etc/app.conf").read_bytes() == before
    # --protect takes a pattern and the probe looks for it literally: a file so named is reported as protected
    name = Path(MARKER).name               # a file name holds no '/': if run, it lands in the login's cwd (/root)
    odd = f"/etc/x$(touch {name})y`touch {name}`;*"
    (sshhost.root / DEST.lstrip("/") / odd.lstrip("/")).write_text("remote's own\n")
    r = migrate(["push", sshhost.alias, "--ssh-config", sshhost.ssh_config, "--dest", DEST, "--source", source,
                 "--protect", odd, "--dry-run"])
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stderr.splitlines() if ln.startswith("protected on target"))
    assert odd in line.split(": ", 1)[1].split(", "), line
    no_marker(sshhost)
    assert not (sshhost.root / "root" / name).exists()


def test_xen_and_xen_bridge(xen_hosts, tmp_path):
    src, dst = xen_hosts
    nets = src.root / "etc/sysconfig/network-scripts"
    nets.mkdir(parents=True)
    (nets / "ifcfg-eth0").write_text("DEVICE=eth0\nBOOTPROTO=static\nIPADDR=198.51.100.5\nNETMASK=255.255.255.0\n")
    base_ssh = ssh_part(src, "src")
    DEFAULTS.update({"guest": "www", "to": "dst", "disk-map": "/var/xen=/srv/xen", "bridge": "xenbr0",
                     "bridge-map": "xenbr0=xenbr0", "ip": f"{OLD_IP}=192.0.2.20", "mac": "auto", "xhostname": "www2",
                     "stage": str(tmp_path / "stage"), "xen-dir": "/etc/xen", "inventory": str(tmp_path / "inv.yml"),
                     "bwlimit": "100000", "iface": "eth0", "xbridge": "xenbr0", "out": str(tmp_path / "review")})
    del DEFAULTS["identity"]
    base_ssh = [a for a in base_ssh if a not in ("-i", "{identity}")]      # one key for both hosts, in the config
    xen = ["xen", *base_ssh, "{guest}", "--to", "{to}", "--disk-map", "{disk-map}", "--bridge", "{bridge}",
           "--bridge-map", "{bridge-map}", "--ip", "{ip}", "--mac", "{mac}", "--hostname", "{xhostname}",
           "--stage", "{stage}", "--xen-dir", "{xen-dir}", "--inventory", "{inventory}", "--bwlimit", "{bwlimit}",
           "--dry-run"]
    shared = {k: v for k, v in SSH_SHARED.items() if k != "identity"}
    cases = variants(xen, {"host": "", **shared, "guest": "", "to": "", "disk-map": "/var/xen=/srv/",
                           "bridge": "", "bridge-map": "xenbr0=", "ip": f"{OLD_IP}=", "mac": "00:16:3e:11:22:33=",
                           "xhostname": "", "stage": f"{tmp_path}/", "xen-dir": "/etc/", "inventory": f"{tmp_path}/",
                           "bwlimit": ""})
    cases += variants(["xen", *base_ssh, "{guest}", "--to", "dst", "--ip", "{ip}", "--dry-run"], {"guest": "/etc/xen/"})
    bridge = ["xen-bridge", *base_ssh, "--iface", "{iface}", "--bridge", "{xbridge}", "-o", "{out}", "--xen-dir",
              "{xen-dir}"]
    cases += variants(bridge, {"host": "", **shared, "iface": "", "xbridge": "", "out": f"{tmp_path}/o/",
                               "xen-dir": "/etc/"})
    runs = run_all(cases)
    assert not check(runs), "\n".join(check(runs))
    no_marker(src, dst)
    taken = {w.split("=")[0] for w, _, r in runs if r.returncode == 0}
    # taken literally: local paths (--stage, --inventory, -o), remote paths (--disk-map's target, --xen-dir)
    assert taken <= {"disk-map", "stage", "inventory", "out", "xen-dir"}, taken
    for w, args, r in runs:
        if r.returncode == 0 and w.startswith("disk-map="):
            target = args[args.index("--disk-map") + 1].split("=", 1)[1]
            assert f"dst:{target}/www.img" in r.stderr, r.stderr          # the literal path, in the plan
        if r.returncode == 0 and w.startswith("out="):
            out = Path(args[args.index("-o") + 1])
            assert (out / "ifcfg-xenbr0").is_file() and (out / "ifcfg-eth0").is_file()
    assert not (dst.root / "srv").exists() or not any((dst.root / "srv").iterdir())   # dry runs: nothing copied

    # one real copy with a metacharacter-laden target: it arrives in the directory literally so named (no quotes
    # or commas: those are the xl config's own syntax, not a shell's)
    weird = f"/srv/x$(touch {MARKER})y`touch {MARKER}`;* |&"
    r = migrate(["xen", "src", "www", "--to", "dst", "--ssh-config", src.ssh_config, "--disk-map",
                 f"/var/xen={weird}", "--ip", f"{OLD_IP}=192.0.2.21", "--stage", tmp_path / "stage",
                 "--inventory", tmp_path / "inv.yml"])
    assert r.returncode == 0, r.stderr
    assert (dst.root / weird.lstrip("/") / "www.img").is_file()
    assert f"{weird}/www.img" in (dst.root / "etc/xen/www.cfg").read_text()
    no_marker(src, dst)
