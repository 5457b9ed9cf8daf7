"""OUTPUT/NAME/NAME.spdx.json: an SPDX 2.3 SBOM of every build, what is inside the image and where it came from.

- The image is one package (SPDXRef-Image, purpose OPERATING-SYSTEM) that the document describes; the recipe file
  (its sha1 and sha256; never its contents) DESCRIBES it.
- Every installed package (the same list as manifest.json's `packages`) is a package the image CONTAINS, with its
  version, architecture, supplier (Maintainer / Vendor), a purl, the sha256 of its .deb when the verified mirror
  index records it, and its declared license where the distro records it: Debian's machine-readable
  /usr/share/doc/PKG/copyright (the `Files: *` license), RPM's License tag; mapped to SPDX identifiers, and
  NOASSERTION where a name has no SPDX identifier (or the file is not machine-readable).
- Each source package is a package of purpose SOURCE that its binaries are GENERATED_FROM.

The document is reproducible: its time is SOURCE_DATE_EPOCH and its namespace derives from the build's inputs.
"""
from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from debian import deb822

from builder import __version__
from builder.build import packages as pkgs
from builder.core.outputs import write_atomic
from builder.core.rootfs import RootFS

if TYPE_CHECKING:
    from builder.build.context import Context
    from builder.build.recipe import Loaded

KIND = "sbom"
NOASSERTION = "NOASSERTION"

# Debian copyright-format short names (and the old Fedora/EL License tags) -> SPDX license identifiers
_SPDX = {
    "gpl-1": "GPL-1.0-only", "gpl-1+": "GPL-1.0-or-later", "gpl-2": "GPL-2.0-only", "gpl-2+": "GPL-2.0-or-later",
    "gpl-2.0": "GPL-2.0-only", "gpl-2.0+": "GPL-2.0-or-later", "gpl-3": "GPL-3.0-only",
    "gpl-3+": "GPL-3.0-or-later", "gpl-3.0": "GPL-3.0-only", "gpl-3.0+": "GPL-3.0-or-later",
    "lgpl-2": "LGPL-2.0-only", "lgpl-2+": "LGPL-2.0-or-later", "lgpl-2.0": "LGPL-2.0-only",
    "lgpl-2.0+": "LGPL-2.0-or-later", "lgpl-2.1": "LGPL-2.1-only", "lgpl-2.1+": "LGPL-2.1-or-later",
    "lgpl-3": "LGPL-3.0-only", "lgpl-3+": "LGPL-3.0-or-later", "lgpl-3.0": "LGPL-3.0-only",
    "lgpl-3.0+": "LGPL-3.0-or-later", "agpl-3": "AGPL-3.0-only", "agpl-3+": "AGPL-3.0-or-later",
    "gfdl-1.2": "GFDL-1.2-only", "gfdl-1.2+": "GFDL-1.2-or-later", "gfdl-1.3": "GFDL-1.3-only",
    "gfdl-1.3+": "GFDL-1.3-or-later", "bsd-2-clause": "BSD-2-Clause", "bsd-3-clause": "BSD-3-Clause",
    "bsd-4-clause": "BSD-4-Clause", "expat": "MIT", "mit": "MIT", "isc": "ISC", "zlib": "Zlib",
    "apache-2.0": "Apache-2.0", "apache-2": "Apache-2.0", "mpl-1.1": "MPL-1.1", "mpl-2.0": "MPL-2.0",
    "cc0-1.0": "CC0-1.0", "cc0": "CC0-1.0", "artistic": "Artistic-1.0-Perl", "artistic-1.0": "Artistic-1.0",
    "artistic-2.0": "Artistic-2.0", "psf-2": "PSF-2.0", "python-2.0": "Python-2.0", "openssl": "OpenSSL",
    "curl": "curl", "x11": "X11", "bsl-1.0": "BSL-1.0", "unicode-dfs-2016": "Unicode-DFS-2016",
    "ofl-1.1": "OFL-1.1", "wtfpl": "WTFPL", "0bsd": "0BSD", "unlicense": "Unlicense", "ruby": "Ruby",
    "gplv2": "GPL-2.0-only", "gplv2+": "GPL-2.0-or-later", "gplv3": "GPL-3.0-only", "gplv3+": "GPL-3.0-or-later",
    "lgplv2": "LGPL-2.0-only", "lgplv2+": "LGPL-2.0-or-later", "lgplv2.1": "LGPL-2.1-only",
    "lgplv2.1+": "LGPL-2.1-or-later", "lgplv3": "LGPL-3.0-only", "lgplv3+": "LGPL-3.0-or-later",
    "asl 2.0": "Apache-2.0", "mpl": "MPL-1.1", "bsd with advertising": "BSD-4-Clause",
}
_OPS = re.compile(r"\s+(and|or)\s+|\s*,\s*(?:(and|or)\s+)?", re.I)
_ID = re.compile(r"[^A-Za-z0-9.-]+")


def spdx_license(text: str) -> str:
    """An SPDX license expression for a distro's license field, or NOASSERTION when any part has no SPDX
    identifier. `GPL-2+ or Artistic` -> `GPL-2.0-or-later OR Artistic-1.0-Perl`."""
    text = (text or "").strip()
    if not text:
        return NOASSERTION
    parts = _OPS.split(text)
    names, ops = parts[0::3], [(a or b or "and") for a, b in zip(parts[1::3], parts[2::3])]
    mapped = [_SPDX.get(n.strip().lower()) for n in names]
    if not all(mapped):
        return NOASSERTION
    out = mapped[0]
    for op, name in zip(ops, mapped[1:]):
        out += f" {op.upper()} {name}"
    return out


def debian_license(root: RootFS, package: str) -> str:
    """The license of the `Files: *` paragraph of /usr/share/doc/PACKAGE/copyright, when the file is in the
    machine-readable copyright format (its first paragraph has Format:); its paragraphs are read with deb822."""
    text = root.read_text(f"/usr/share/doc/{package}/copyright")
    if not text or not text.startswith("Format:"):
        return NOASSERTION
    for para in deb822.Deb822.iter_paragraphs(text.splitlines(), use_apt_pkg=False):
        if para.get("Files", "").split() == ["*"]:
            lines = para.get("License", "").splitlines()
            return spdx_license(lines[0]) if lines else NOASSERTION
    return NOASSERTION


def _id(kind: str, name: str, n: int) -> str:
    return f"SPDXRef-{kind}-{_ID.sub('-', name)}-{n}"


def _purl(distro: str, p: pkgs.Package, release: str) -> str:
    kind = "deb" if distro == "debian" else "rpm"
    q = [f"arch={quote(p.arch, safe='')}"] if p.arch else []
    q.append(f"distro={quote(f'{distro}-{release}', safe='')}")
    return f"pkg:{kind}/{distro}/{quote(p.name, safe='')}@{quote(p.version, safe='')}?{'&'.join(q)}"


def _rel(a: str, kind: str, b: str) -> dict:
    return {"spdxElementId": a, "relationshipType": kind, "relatedSpdxElement": b}


def _supplier(text: str) -> str:
    m = re.match(r"^\s*([^<]+?)\s*<([^>]+)>", text or "")
    if m:
        return f"Organization: {m.group(1)} ({m.group(2)})"
    return f"Organization: {text.strip()}" if text and text.strip() else NOASSERTION


def document(ctx: "Context", loaded: "Loaded", found: list[pkgs.Package], checksums: dict[str, str]) -> dict:
    r = ctx.recipe
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ctx.epoch))
    raw = Path(loaded.path).read_bytes()
    ident = ctx.build_key or hashlib.sha256(json.dumps([loaded.sha256, ctx.epoch, [p.key for p in found]]).encode()
                                            ).hexdigest()
    image = {"SPDXID": "SPDXRef-Image", "name": r.name, "versionInfo": time.strftime("%Y%m%d_%H%M",
                                                                                      time.gmtime(ctx.epoch)),
             "downloadLocation": NOASSERTION, "filesAnalyzed": False, "primaryPackagePurpose": "OPERATING-SYSTEM",
             "licenseConcluded": NOASSERTION, "licenseDeclared": NOASSERTION, "copyrightText": NOASSERTION,
             "supplier": NOASSERTION,
             "description": f"{r.distro} {r.release} {r.arch} root file system built by imgbuild from {r.name}"}
    recipe_file = {"SPDXID": "SPDXRef-Recipe", "fileName": f"./{Path(loaded.path).name}",
                   "checksums": [{"algorithm": "SHA1", "checksumValue": hashlib.sha1(raw).hexdigest()},
                                 {"algorithm": "SHA256", "checksumValue": hashlib.sha256(raw).hexdigest()}],
                   "licenseConcluded": NOASSERTION, "copyrightText": NOASSERTION,
                   "comment": "the imgbuild recipe this image was built from"}
    packages, sources = [image], {}
    rels = [_rel("SPDXRef-DOCUMENT", "DESCRIBES", "SPDXRef-Image"),
            _rel("SPDXRef-Recipe", "DESCRIBES", "SPDXRef-Image")]
    for n, p in enumerate(found, 1):
        spdx_id = _id("Package", p.key, n)
        lic = spdx_license(p.license) if p.license else (
            debian_license(ctx.root, p.name) if ctx.family.package_db == "dpkg" else NOASSERTION)
        entry = {"SPDXID": spdx_id, "name": p.name, "versionInfo": p.version, "downloadLocation": NOASSERTION,
                 "filesAnalyzed": False, "supplier": _supplier(p.supplier), "licenseConcluded": NOASSERTION,
                 "licenseDeclared": lic, "copyrightText": NOASSERTION,
                 "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                                   "referenceLocator": _purl(r.distro, p, r.release)}]}
        if p.arch:
            entry["comment"] = f"architecture {p.arch}"
        if checksums.get(p.key):
            entry["checksums"] = [{"algorithm": "SHA256", "checksumValue": checksums[p.key]}]
        packages.append(entry)
        rels.append(_rel("SPDXRef-Image", "CONTAINS", spdx_id))
        if p.source:
            sk = (p.source, p.source_version)
            if sk not in sources:
                sources[sk] = _id("Source", f"{p.source}-{p.source_version}", len(sources) + 1)
                packages.append({"SPDXID": sources[sk], "name": p.source, "versionInfo": p.source_version,
                                 "downloadLocation": NOASSERTION, "filesAnalyzed": False,
                                 "primaryPackagePurpose": "SOURCE", "licenseConcluded": NOASSERTION,
                                 "licenseDeclared": NOASSERTION, "copyrightText": NOASSERTION})
            rels.append(_rel(spdx_id, "GENERATED_FROM", sources[sk]))
    return {
        "spdxVersion": "SPDX-2.3", "dataLicense": "CC0-1.0", "SPDXID": "SPDXRef-DOCUMENT",
        "name": f"{r.name} ({r.distro} {r.release} {r.arch})",
        "documentNamespace": f"https://spdx.imgbuild.invalid/{quote(r.name, safe='')}/{ident}",
        "creationInfo": {"created": created, "creators": [f"Tool: imgbuild-{__version__}"]},
        "documentDescribes": ["SPDXRef-Image"],
        "packages": packages, "files": [recipe_file], "relationships": rels,
    }


def deb_checksums(ctx: "Context", found: list[pkgs.Package]) -> dict[str, str]:
    """package key -> sha256 of its .deb, from the verified mirror index (Debian); {} otherwise."""
    index = ctx.plan.index
    if index is None:
        return {}
    from builder.debian import apt
    names = {apt.archive_name(p.name, p.version, p.arch): p.key for p in found}
    return {names[n]: h for n, (h, _size) in apt.deb_checksums(index, set(names)).items()}


def write(ctx: "Context", loaded: "Loaded") -> Path:
    """STAGE/NAME.spdx.json; the packages it lists become the manifest's too (ctx.packages)."""
    found = pkgs.details(ctx.root, ctx.family.package_db)
    ctx.packages = {p.key: p.version for p in found}
    doc = document(ctx, loaded, found, deb_checksums(ctx, found))
    dest = ctx.stage / f"{ctx.recipe.name}.spdx.json"
    write_atomic(dest, json.dumps(doc, indent=1, sort_keys=True) + "\n")
    return dest
