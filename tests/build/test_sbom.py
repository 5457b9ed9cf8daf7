"""The SPDX 2.3 SBOM of a real build (the session's recipes/debian12.yml output), checked by the SPDX project's own
validator (spdx-tools), and the license mapping it relies on."""
from __future__ import annotations

import json

import pytest
from spdx_tools.spdx.parser.parse_anything import parse_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

from builder.build.sbom import NOASSERTION, spdx_license
from tests.conftest import sha256


@pytest.mark.parametrize("field, want", [
    ("GPL-2+", "GPL-2.0-or-later"),
    ("GPL-2+ or Artistic", "GPL-2.0-or-later OR Artistic-1.0-Perl"),
    ("LGPL-2.1+ and BSD-3-clause", "LGPL-2.1-or-later AND BSD-3-Clause"),
    ("Expat", "MIT"),
    ("GPLv2+ and LGPLv2+", "GPL-2.0-or-later AND LGPL-2.0-or-later"),
    ("public-domain", NOASSERTION),            # no SPDX identifier: nothing is asserted
    ("GPL-2+ or some-other", NOASSERTION),
    ("", NOASSERTION),
])
def test_license_fields_become_spdx_expressions(field, want):
    assert spdx_license(field) == want


@pytest.fixture(scope="module")
def spdx(debian12_build):
    return debian12_build / "debian12.spdx.json"


@pytest.mark.root
@pytest.mark.network
@pytest.mark.slow
def test_the_sbom_validates(spdx):
    doc = parse_file(str(spdx))
    problems = validate_full_spdx_document(doc)
    assert problems == [], [p.validation_message for p in problems[:5]]
    assert doc.creation_info.spdx_version == "SPDX-2.3"


@pytest.mark.root
@pytest.mark.network
@pytest.mark.slow
def test_its_packages_are_the_manifests(spdx, debian12_build):
    manifest = json.loads((debian12_build / "manifest.json").read_text())
    doc = json.loads(spdx.read_text())
    binaries = [p for p in doc["packages"] if p["SPDXID"].startswith("SPDXRef-Package-")]
    assert {(p["name"], p["versionInfo"]) for p in binaries} == set(manifest["packages"].items())
    assert len(binaries) == len(manifest["packages"]) > 50
    # every binary comes from a source package that is listed, and the image contains it
    rel = {(r["spdxElementId"], r["relationshipType"], r["relatedSpdxElement"]) for r in doc["relationships"]}
    ids = {p["SPDXID"]: p for p in doc["packages"]}
    for p in binaries:
        assert ("SPDXRef-Image", "CONTAINS", p["SPDXID"]) in rel
        src = [b for a, k, b in rel if a == p["SPDXID"] and k == "GENERATED_FROM"]
        assert len(src) == 1 and ids[src[0]]["primaryPackagePurpose"] == "SOURCE", p["name"]
        # the .deb's sha256 from the signed mirror index
        assert p["checksums"][0]["algorithm"] == "SHA256" and len(p["checksums"][0]["checksumValue"]) == 64
    bash = next(p for p in binaries if p["name"] == "bash")
    version = bash["versionInfo"].replace("+", "%2B")          # a purl's version is percent-encoded
    assert bash["externalRefs"][0]["referenceLocator"] == (f"pkg:deb/debian/bash@{version}?arch=amd64"
                                                           "&distro=debian-bookworm")
    declared = [p["licenseDeclared"] for p in binaries if p["licenseDeclared"] != NOASSERTION]
    assert len(declared) >= 10, "licenses from the machine-readable copyright files"


@pytest.mark.root
@pytest.mark.network
@pytest.mark.slow
def test_the_recipe_describes_the_image_and_the_sums_cover_the_sbom(spdx, debian12_build):
    doc = json.loads(spdx.read_text())
    recipe = doc["files"][0]
    assert recipe["SPDXID"] == "SPDXRef-Recipe" and recipe["fileName"] == "./debian12.yml"
    assert {"spdxElementId": "SPDXRef-Recipe", "relationshipType": "DESCRIBES",
            "relatedSpdxElement": "SPDXRef-Image"} in doc["relationships"]
    assert doc["documentDescribes"] == ["SPDXRef-Image"]
    sums = (debian12_build / "SHA256SUMS").read_text()
    assert f"{sha256(spdx)}  debian12.spdx.json\n" in sums
