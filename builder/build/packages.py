"""What is installed in a root: package names and versions, read from the root's own package database."""
from __future__ import annotations

import re
from dataclasses import dataclass

from debian import deb822

from builder.core import proc as runner
from builder.core.errors import CommandError
from builder.core.rootfs import RootFS


@dataclass(frozen=True)
class Package:
    """One installed package as its database records it. key: its name in the manifest (name, or name:arch for
    the second architecture of the same package)."""
    key: str
    name: str
    version: str
    arch: str
    source: str              # the source package's name ("" when the database does not say)
    source_version: str
    supplier: str = ""       # the Maintainer / Vendor field
    license: str = ""        # what the package database says (RPM's License tag); Debian: see builder/build/sbom.py
    sha256: str = ""         # of the package file, when the database records it


def dpkg_details(root: RootFS) -> list[Package]:
    text = root.read_text("/var/lib/dpkg/status") or ""
    out: dict[str, Package] = {}
    for para in deb822.Deb822.iter_paragraphs(text.splitlines()):
        if para.get("Status", "").endswith(" installed"):
            name, version, arch = para["Package"], para.get("Version", ""), para.get("Architecture", "")
            key = name if name not in out else f"{name}:{arch}"   # the same package for a second architecture
            src, _, src_version = para.get("Source", name).partition(" (")
            out[key] = Package(key, name, version, arch, src.strip(), src_version.rstrip(")") or version,
                               para.get("Maintainer", ""))
    return [out[k] for k in sorted(out)]


def dpkg(root: RootFS) -> dict[str, str]:
    return {p.key: p.version for p in dpkg_details(root)}


_RPM_FIELDS = ("%{NAME}", "%|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE}", "%{ARCH}", "%{SOURCERPM}", "%{VENDOR}",
               "%{LICENSE}")


def rpm_details(root: RootFS) -> list[Package]:
    """Installed packages from the root's rpm database: the root's own rpm when it has one (the database is in
    its format), else the host's rpm with --dbpath /var/lib/rpm."""
    qf = "\\t".join(_RPM_FIELDS) + "\\n"
    own = next((p for p in ("/usr/bin/rpm", "/bin/rpm") if root.exists(p)), None)
    argv = (["chroot", str(root.path), own, "-qa", "--qf", qf] if own else
            ["rpm", "--root", str(root.path), "--dbpath", "/var/lib/rpm", "-qa", "--qf", qf])
    try:
        out = runner.output(argv, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/nonexistent"})
    except CommandError:
        return []
    pkgs: dict[str, Package] = {}
    for line in out.splitlines():
        f = line.split("\t")
        if len(f) != len(_RPM_FIELDS) or f[0] == "gpg-pubkey":
            continue
        name, version, arch, srpm, vendor, lic = (x if x != "(none)" else "" for x in f)
        src = re.match(r"^(.+)-([^-]+-[^-]+)\.src\.rpm$", srpm)
        pkgs[name] = Package(name, name, version, arch, src.group(1) if src else "", src.group(2) if src else "",
                             vendor, lic)
    return [pkgs[k] for k in sorted(pkgs)]


def rpm(root: RootFS) -> dict[str, str]:
    return {p.key: p.version for p in rpm_details(root)}


READERS = {"dpkg": dpkg, "rpm": rpm}
DETAILS = {"dpkg": dpkg_details, "rpm": rpm_details}


def installed(root: RootFS, db: str) -> dict[str, str]:
    return READERS[db](root)


def details(root: RootFS, db: str) -> list[Package]:
    return DETAILS[db](root)
