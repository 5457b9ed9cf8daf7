"""What is installed in a root: package names and versions, read from the root's own package database."""
from __future__ import annotations

from debian import deb822

from builder.core import proc as runner
from builder.core.errors import CommandError
from builder.core.rootfs import RootFS


def dpkg(root: RootFS) -> dict[str, str]:
    text = root.read_text("/var/lib/dpkg/status") or ""
    out = {}
    for para in deb822.Deb822.iter_paragraphs(text.splitlines()):
        if para.get("Status", "").endswith(" installed"):
            name = para["Package"]
            if name in out:  # the same package for a second architecture
                name = f"{name}:{para.get('Architecture', '')}"
            out[name] = para.get("Version", "")
    return dict(sorted(out.items()))


def rpm(root: RootFS) -> dict[str, str]:
    """Installed packages from the root's rpm database: the root's own rpm when it has one (the database is in
    its format), else the host's rpm with --dbpath /var/lib/rpm."""
    qf = "%{NAME} %|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE}\\n"
    own = next((p for p in ("/usr/bin/rpm", "/bin/rpm") if root.exists(p)), None)
    argv = (["chroot", str(root.path), own, "-qa", "--qf", qf] if own else
            ["rpm", "--root", str(root.path), "--dbpath", "/var/lib/rpm", "-qa", "--qf", qf])
    try:
        out = runner.output(argv, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/nonexistent"})
    except CommandError:
        return {}
    pkgs = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    pkgs.pop("gpg-pubkey", None)
    return dict(sorted(pkgs.items()))


READERS = {"dpkg": dpkg, "rpm": rpm}


def installed(root: RootFS, db: str) -> dict[str, str]:
    return READERS[db](root)
