"""repofiles.rewrite() on the repo files CentOS 5, 6 and 7 really ship (centos-release's CentOS-Base.repo and
friends, as in the vault), and seed.rewrite_all()'s errors for bootstrap.repos."""
from __future__ import annotations

import configparser

import pytest

from builder.core.errors import InputError, RecipeError
from builder.rpm import repofiles, seed

MIRROR = "https://vault.example.org/centos/6.10"

# centos-release-5-11.el5.centos: /etc/yum.repos.d/CentOS-Base.repo
CENTOS5_BASE = """\
# CentOS-Base.repo
#
# The mirror system uses the connecting IP address of the client and the
# update status of each mirror to pick mirrors that are updated to and
# geographically close to the client.  You should use this for CentOS updates
# unless you are manually picking other mirrors.
#
# If the mirrorlist= does not work for you, as a fall back you can try the 
# remarked out baseurl= line instead.
#
#

[base]
name=CentOS-$releasever - Base
mirrorlist=http://mirrorlist.centos.org/?release=$releasever&arch=$basearch&repo=os
#baseurl=http://mirror.centos.org/centos/$releasever/os/$basearch/
gpgcheck=1
gpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-CentOS-5

#released updates 
[updates]
name=CentOS-$releasever - Updates
mirrorlist=http://mirrorlist.centos.org/?release=$releasever&arch=$basearch&repo=updates
#baseurl=http://mirror.centos.org/centos/$releasever/updates/$basearch/
gpgcheck=1
gpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-CentOS-5

#additional packages that may be useful
[extras]
name=CentOS-$releasever - Extras
mirrorlist=http://mirrorlist.centos.org/?release=$releasever&arch=$basearch&repo=extras
#baseurl=http://mirror.centos.org/centos/$releasever/extras/$basearch/
gpgcheck=1
gpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-CentOS-5

#additional packages that extend functionality of existing packages
[centosplus]
name=CentOS-$releasever - Plus
mirrorlist=http://mirrorlist.centos.org/?release=$releasever&arch=$basearch&repo=centosplus
#baseurl=http://mirror.centos.org/centos/$releasever/centosplus/$basearch/
gpgcheck=1
enabled=0
gpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-CentOS-5

#contrib - packages by Centos Users
[contrib]
name=CentOS-$releasever - Contrib
mirrorlist=http://mirrorlist.centos.org/?release=$releasever&arch=$basearch&repo=contrib
#baseurl=http://mirror.centos.org/centos/$releasever/contrib/$basearch/
gpgcheck=1
enabled=0
gpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-CentOS-5
"""

# centos-release-6-10.el6.centos.12.3: /etc/yum.repos.d/CentOS-Base.repo ($infra in the mirrorlist)
CENTOS6_BASE = """\
# CentOS-Base.repo
#
# The mirror system uses the connecting IP address of the client and the
# update status of each mirror to pick mirrors that are updated to and
# geographically close to the client.  You should use this for CentOS updates
# unless you are manually picking other mirrors.
#
# If the mirrorlist= does not work for you, as a fall back you can try the 
# remarked out baseurl= line instead.
#
#

[base]
name=CentOS-$releasever - Base
mirrorlist=http://mirrorlist.centos.org/?release=$releasever&arch=$basearch&repo=os&infra=$infra
#baseurl=http://mirror.centos.org/centos/$releasever/os/$basearch/
gpgcheck=1
gpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-CentOS-6

#released updates 
[updates]
name=CentOS-$releasever - Updates
mirrorlist=http://mirrorlist.centos.org/?release=$releasever&arch=$basearch&repo=updates&infra=$infra
#baseurl=http://mirror.centos.org/centos/$releasever/updates/$basearch/
gpgcheck=1
gpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-CentOS-6

#additional packages that may be useful
[extras]
name=CentOS-$releasever - Extras
mirrorlist=http://mirrorlist.centos.org/?release=$releasever&arch=$basearch&repo=extras&infra=$infra
#baseurl=http://mirror.centos.org/centos/$releasever/extras/$basearch/
gpgcheck=1
gpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-CentOS-6

#additional packages that extend functionality of existing packages
[centosplus]
name=CentOS-$releasever - Plus
mirrorlist=http://mirrorlist.centos.org/?release=$releasever&arch=$basearch&repo=centosplus&infra=$infra
#baseurl=http://mirror.centos.org/centos/$releasever/centosplus/$basearch/
gpgcheck=1
enabled=0
gpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-CentOS-6

#contrib - packages by Centos Users
[contrib]
name=CentOS-$releasever - Contrib
mirrorlist=http://mirrorlist.centos.org/?release=$releasever&arch=$basearch&repo=contrib&infra=$infra
#baseurl=http://mirror.centos.org/centos/$releasever/contrib/$basearch/
gpgcheck=1
enabled=0
gpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-CentOS-6
"""

# centos-release-6-10: /etc/yum.repos.d/CentOS-Debuginfo.repo (a baseurl with the release number written out,
# no $releasever: it cannot be pointed at the mirror)
CENTOS6_DEBUGINFO = """\
# CentOS-Debug.repo
#
# The mirror system uses the connecting IP address of the client and the
# update status of each mirror to pick mirrors that are updated to and
# geographically close to the client.  You should use this for CentOS updates
# unless you are manually picking other mirrors.
#

# All debug packages from all the various CentOS-6 releases
# are merged into a single repo, split by BaseArch
#
# Note: packages in the debuginfo repo are currently not signed
#

[base-debuginfo]
name=CentOS-6 - Debuginfo
baseurl=http://debuginfo.centos.org/6/$basearch/
gpgcheck=1
gpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-CentOS-Debug-6
enabled=0
"""

# centos-release-7-9.2009 (altarch flavour: two keys on a continuation line), CentOS-Base.repo plus its
# CentOS-Media.repo section (a file: baseurl, no $releasever)
CENTOS7_BASE = """\
# CentOS-Base.repo
#
# The mirror system uses the connecting IP address of the client and the
# update status of each mirror to pick mirrors that are updated to and
# geographically close to the client.  You should use this for CentOS updates
# unless you are manually picking other mirrors.
#
# If the mirrorlist= does not work for you, as a fall back you can try the
# remarked out baseurl= line instead.
#
#

[base]
name=CentOS-$releasever - Base
mirrorlist=http://mirrorlist.centos.org/?release=$releasever&arch=$basearch&repo=os&infra=$infra
#baseurl=http://mirror.centos.org/centos/$releasever/os/$basearch/
gpgcheck=1
gpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-CentOS-7
       file:///etc/pki/rpm-gpg/RPM-GPG-KEY-CentOS-SIG-AltArch-7-$basearch

#released updates
[updates]
name=CentOS-$releasever - Updates
mirrorlist=http://mirrorlist.centos.org/?release=$releasever&arch=$basearch&repo=updates&infra=$infra
#baseurl=http://mirror.centos.org/centos/$releasever/updates/$basearch/
gpgcheck=1
gpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-CentOS-7

#additional packages that may be useful
[extras]
name=CentOS-$releasever - Extras
mirrorlist=http://mirrorlist.centos.org/?release=$releasever&arch=$basearch&repo=extras&infra=$infra
#baseurl=http://mirror.centos.org/centos/$releasever/extras/$basearch/
gpgcheck=1
gpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-CentOS-7

#additional packages that extend functionality of existing packages
[centosplus]
name=CentOS-$releasever - Plus
mirrorlist=http://mirrorlist.centos.org/?release=$releasever&arch=$basearch&repo=centosplus&infra=$infra
#baseurl=http://mirror.centos.org/centos/$releasever/centosplus/$basearch/
gpgcheck=1
enabled=0
gpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-CentOS-7

[c7-media]
name=CentOS-$releasever - Media
baseurl=file:///media/CentOS/
        file:///media/cdrom/
        file:///media/cdrecorder/
gpgcheck=1
enabled=0
gpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-CentOS-7
"""

# A repo file with the baseurl active (what people and some vault mirrors ship), metalink instead of mirrorlist.
ACTIVE_BASEURL = """\
[base]
name=Base $releasever
baseurl=http://mirror.centos.org/centos/$releasever/os/$basearch/
metalink=https://mirrors.example.org/metalink?repo=base-$releasever&arch=$basearch
enabled=1
gpgcheck=0
"""

CASES = {
    # id: (text, release, arch, mirror,
    #      {repo: expected baseurl or None when it cannot be pointed at the mirror}, enabled by default)
    "centos5": (CENTOS5_BASE, "5", "i386", "https://vault.centos.org/5.11",
                {"base": "https://vault.centos.org/5.11/os/i386",
                 "updates": "https://vault.centos.org/5.11/updates/i386",
                 "extras": "https://vault.centos.org/5.11/extras/i386",
                 "centosplus": "https://vault.centos.org/5.11/centosplus/i386",
                 "contrib": "https://vault.centos.org/5.11/contrib/i386"},
                {"base", "updates", "extras"}),
    "centos6": (CENTOS6_BASE, "6", "x86_64", "https://vault.centos.org/6.10/",
                {"base": "https://vault.centos.org/6.10/os/x86_64",
                 "updates": "https://vault.centos.org/6.10/updates/x86_64",
                 "extras": "https://vault.centos.org/6.10/extras/x86_64",
                 "centosplus": "https://vault.centos.org/6.10/centosplus/x86_64",
                 "contrib": "https://vault.centos.org/6.10/contrib/x86_64"},
                {"base", "updates", "extras"}),
    "centos6-debuginfo": (CENTOS6_DEBUGINFO, "6", "x86_64", "https://vault.centos.org/6.10",
                          {"base-debuginfo": None}, set()),
    "centos7": (CENTOS7_BASE, "7", "aarch64", "http://127.0.0.1:8080/centos-altarch/7.9.2009",
                {"base": "http://127.0.0.1:8080/centos-altarch/7.9.2009/os/aarch64",
                 "updates": "http://127.0.0.1:8080/centos-altarch/7.9.2009/updates/aarch64",
                 "extras": "http://127.0.0.1:8080/centos-altarch/7.9.2009/extras/aarch64",
                 "centosplus": "http://127.0.0.1:8080/centos-altarch/7.9.2009/centosplus/aarch64",
                 "c7-media": None},
                {"base", "updates", "extras"}),
    "active-baseurl-metalink": (ACTIVE_BASEURL, "6", "i686", "http://m.example/6.10",
                                {"base": "http://m.example/6.10/os/i386"}, {"base"}),
}


def _parse(text: str) -> configparser.RawConfigParser:
    cp = configparser.RawConfigParser(strict=True, interpolation=None)
    cp.optionxform = str
    cp.read_string(text)
    return cp


def _rewrite(case: str, want: tuple[str, ...] = ()):
    text, release, arch, mirror, _, _ = CASES[case]
    return repofiles.rewrite(text, "CentOS-Base.repo", mirror, repofiles.variables(release, arch), want)


@pytest.mark.parametrize("case", list(CASES))
def test_rewrite_points_every_releasever_repo_at_the_mirror(case):
    text, _, _, _, expected, enabled = CASES[case]
    out, repos = _rewrite(case)
    original = _parse(text)
    cp = _parse(out)                       # the output is a valid repo file again (strict: no duplicates)
    assert out.startswith("# rewritten by imgbuild")
    assert cp.sections() == original.sections()
    assert [r.id for r in repos] == original.sections()
    for r in repos:
        sec = cp[r.id]
        assert r.file == "CentOS-Base.repo"
        if expected[r.id] is None:         # cannot be pointed at this mirror: left as it was, but disabled
            assert (r.baseurl, r.enabled) == ("", False)
            assert sec["enabled"] == "0"
            assert sec["baseurl"].split() == original[r.id]["baseurl"].split()
            continue
        assert r.baseurl == expected[r.id] == sec["baseurl"]
        assert "$" not in sec["baseurl"]
        assert "mirrorlist" not in sec and "metalink" not in sec
        assert r.enabled == (r.id in enabled)
        assert sec["enabled"] == ("1" if r.id in enabled else "0")
        # what the guest's yum expands at run time is kept as written
        assert sec["name"] == original[r.id]["name"]
        assert sec["gpgcheck"] == original[r.id]["gpgcheck"]
    assert "mirrorlist.centos.org" not in out and "mirrors.example.org" not in out
    assert "$infra" not in out


def test_variables():
    assert repofiles.variables("6", "x86_64")["basearch"] == "x86_64"
    for arch in ("i386", "i486", "i586", "i686"):
        v = repofiles.variables("5", arch)
        assert (v["releasever"], v["basearch"], v["arch"]) == ("5", "i386", arch)
    assert repofiles.expand("a/$releasever/${basearch}/$nosuchvar", repofiles.variables("7", "x86_64")) == \
        "a/7/x86_64/$nosuchvar"


def test_gpgkeys_are_split_and_resolved():
    _, repos = _rewrite("centos7")
    base = next(r for r in repos if r.id == "base")
    assert base.gpgcheck is True
    assert base.gpgkeys == ("file:///etc/pki/rpm-gpg/RPM-GPG-KEY-CentOS-7",
                            "file:///etc/pki/rpm-gpg/RPM-GPG-KEY-CentOS-SIG-AltArch-7-aarch64")
    assert base.name == "CentOS-7 - Base"
    _, repos = _rewrite("active-baseurl-metalink")
    assert repos[0].gpgcheck is False and repos[0].gpgkeys == ()


def test_multiline_values_survive_a_second_read():
    out, _ = _rewrite("centos7")
    cp = _parse(out)
    assert cp["base"]["gpgkey"].split() == ["file:///etc/pki/rpm-gpg/RPM-GPG-KEY-CentOS-7",
                                            "file:///etc/pki/rpm-gpg/RPM-GPG-KEY-CentOS-SIG-AltArch-7-$basearch"]
    assert cp["c7-media"]["baseurl"].split() == ["file:///media/CentOS/", "file:///media/cdrom/",
                                                 "file:///media/cdrecorder/"]


@pytest.mark.parametrize("want, enabled", [
    (("base",), {"base"}),
    (("base", "centosplus"), {"base", "centosplus"}),        # enabled=0 in the file, the recipe turns it on
    (("updates", "contrib"), {"updates", "contrib"}),
])
def test_want_selects_the_enabled_repos(want, enabled):
    out, repos = _rewrite("centos6", want)
    cp = _parse(out)
    assert {r.id for r in repos if r.enabled} == enabled
    assert {s for s in cp.sections() if cp[s]["enabled"] == "1"} == enabled
    assert all("$" not in cp[s]["baseurl"] for s in cp.sections())


def test_rewrite_refuses_an_unreadable_file():
    with pytest.raises(InputError, match="CentOS-Base.repo"):
        repofiles.rewrite("baseurl=http://x/$releasever/os/\n[base]\n", "CentOS-Base.repo", MIRROR,
                          repofiles.variables("6", "x86_64"))


# ------------------------------------------------------------------ seed.rewrite_all

FILES = {"/etc/yum.repos.d/CentOS-Base.repo": CENTOS6_BASE,
         "/etc/yum.repos.d/CentOS-Debuginfo.repo": CENTOS6_DEBUGINFO}
VARS = repofiles.variables("6", "x86_64")


def test_rewrite_all_default_and_chosen_repos():
    out, enabled = seed.rewrite_all(FILES, MIRROR, VARS, (), "centos6.yml")
    assert set(out) == set(FILES)
    assert [r.id for r in enabled] == ["base", "updates", "extras"]
    assert enabled[0].baseurl == f"{MIRROR}/os/x86_64"
    out, enabled = seed.rewrite_all(FILES, MIRROR, VARS, ("base", "centosplus"), "centos6.yml")
    assert [r.id for r in enabled] == ["base", "centosplus"]
    for text in out.values():
        _parse(text)


def test_rewrite_all_unknown_repo_is_a_recipe_error():
    with pytest.raises(RecipeError) as e:
        seed.rewrite_all(FILES, MIRROR, VARS, ("base", "epel"), "centos6.yml")
    msg = str(e.value)
    assert "centos6.yml: bootstrap.repos" in msg and "'epel'" in msg
    assert "base" in msg and "base-debuginfo" in msg           # what the release has
    assert [p.path for p in e.value.problems] == ["bootstrap.repos"]
    assert e.value.exit_code == 2


def test_rewrite_all_repo_that_cannot_use_the_mirror_is_a_recipe_error():
    with pytest.raises(RecipeError) as e:
        seed.rewrite_all(FILES, MIRROR, VARS, ("base", "base-debuginfo"), "centos6.yml")
    msg = str(e.value)
    assert "centos6.yml: bootstrap.repos" in msg and "'base-debuginfo'" in msg and "$releasever" in msg
    assert [p.path for p in e.value.problems] == ["bootstrap.repos"]


def test_rewrite_all_with_nothing_enabled():
    with pytest.raises(InputError, match="no repo is enabled"):
        seed.rewrite_all({"/etc/yum.repos.d/CentOS-Debuginfo.repo": CENTOS6_DEBUGINFO}, MIRROR, VARS, (), "x.yml")


# ------------------------------------------------------------------ seed.point_repos

# epel-release-7 (in CentOS 7's extras): /etc/yum.repos.d/epel.repo. Not the release package's: EPEL is not on
# the CentOS mirror, and its baseurls name the release as a number, not $releasever.
EPEL7 = """\
[epel]
name=Extra Packages for Enterprise Linux 7 - $basearch
#baseurl=http://download.fedoraproject.org/pub/epel/7/$basearch
metalink=https://mirrors.fedoraproject.org/metalink?repo=epel-7&arch=$basearch
failovermethod=priority
enabled=1
gpgcheck=1
gpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-EPEL-7

[epel-debuginfo]
name=Extra Packages for Enterprise Linux 7 - $basearch - Debug
#baseurl=http://download.fedoraproject.org/pub/epel/7/$basearch/debug
metalink=https://mirrors.fedoraproject.org/metalink?repo=epel-debug-7&arch=$basearch
failovermethod=priority
enabled=0
gpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-EPEL-7
gpgcheck=1
"""


def _point_repos_ctx(tmp_path, files: dict[str, str]):
    """A root after the install, a Plan as seed.plan() makes it for CENTOS7_BASE, and the Context."""
    from builder.build.context import Context
    from builder.build.families import family_of
    from builder.build.recipe import load
    from builder.core.rootfs import RootFS
    from builder.rpm.repodata import Package

    recipe = tmp_path / "c7.yml"
    recipe.write_text("name: c7\ndistro: centos\nrelease: '7'\nbootstrap:\n  mirror: http://127.0.0.1:8080/7.9.2009\n"
                      "  release_package: centos-release\n")
    r = load(recipe).recipe
    vars = repofiles.variables("7", "x86_64")
    seeded, enabled = seed.rewrite_all({"/etc/yum.repos.d/CentOS-Base.repo": CENTOS7_BASE}, r.bootstrap.mirror,
                                       vars, (), str(recipe))
    release = Package("centos-release", "x86_64", 0, "7", "9.2009.1.el7.centos", "Packages/x.rpm", "sha256",
                      "0" * 64, 1, (), (), (), "base", "http://127.0.0.1:8080/7.9.2009/os/x86_64")
    plan = seed.Plan("7", vars, release, {p: t.encode() for p, t in seeded.items()}, tuple(enabled), (), ())
    root = tmp_path / "root"
    for path, text in files.items():
        (root / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (root / path.lstrip("/")).write_text(text)
    ctx = Context(recipe=r, source=recipe, root=RootFS(root), work=tmp_path, stage=tmp_path / "stage",
                  epoch=0, family=family_of("centos"))
    return ctx, plan, root / "etc/yum.repos.d"


def test_point_repos_puts_the_seeded_files_back(tmp_path):
    """rpm-native unpacks centos-release over the seeded files; dnf leaves .rpmnew copies: both end as seeded."""
    ctx, plan, d = _point_repos_ctx(tmp_path, {"/etc/yum.repos.d/CentOS-Base.repo": CENTOS7_BASE,
                                               "/etc/yum.repos.d/CentOS-Base.repo.rpmnew": CENTOS7_BASE})
    seed.point_repos(ctx, plan)
    assert sorted(p.name for p in d.iterdir()) == ["CentOS-Base.repo"]
    assert (d / "CentOS-Base.repo").read_bytes() == plan.files["/etc/yum.repos.d/CentOS-Base.repo"]


@pytest.mark.parametrize("method", ["dnf", "rpm-native"])
def test_point_repos_leaves_other_packages_repo_files_alone(tmp_path, method):
    """A repo file another package installed (epel-release, from CentOS extras) is not the release's: it must
    neither fail the build nor be rewritten (EPEL would end disabled in the guest, or pointed at the CentOS
    mirror)."""
    ctx, plan, d = _point_repos_ctx(tmp_path, {"/etc/yum.repos.d/epel.repo": EPEL7,
                                               "/etc/yum.repos.d/CentOS-Base.repo": CENTOS7_BASE})
    if method == "dnf":   # %config(noreplace) kept the seeded file; rpm-native unpacked the release's over it
        (d / "CentOS-Base.repo").write_bytes(plan.files["/etc/yum.repos.d/CentOS-Base.repo"])
    seed.point_repos(ctx, plan)
    assert (d / "epel.repo").read_text() == EPEL7
    assert (d / "CentOS-Base.repo").read_bytes() == plan.files["/etc/yum.repos.d/CentOS-Base.repo"]


# The release package's repo files come off a mirror: outside input. What yum or dnf could not take, or what would
# point a repo outside the mirror's tree, is refused naming the file; nothing else escapes as an exception.
BAD_REPO_FILES = {
    "repo id with a slash": "[../../etc]\nbaseurl=http://m/$releasever/os/\n",
    "repo id with a blank": "[my repo]\nbaseurl=http://m/$releasever/os/\n",
    "repo id with a dollar": "[x$(id)]\nbaseurl=http://m/$releasever/os/\n",
    "dot-dot after releasever": "[base]\nbaseurl=http://m/centos/$releasever/../../../etc/\n",
    "query after releasever": "[base]\nbaseurl=http://m/centos/$releasever/os/?x=1\n",
    "NUL byte": "[base]\nname=a\x00b\nbaseurl=http://m/$releasever/os/\n",
    "too large": "[base]\nbaseurl=http://m/$releasever/os/\n" + "# padding\n" * 200_000,
    "no section": "baseurl=http://m/$releasever/os/\n",
    "no delimiter": "[base]\nbaseurl\n",
}


@pytest.mark.parametrize("case", sorted(BAD_REPO_FILES))
def test_rewrite_refuses_what_yum_cannot_take(case):
    with pytest.raises(InputError) as e:
        repofiles.rewrite(BAD_REPO_FILES[case], "CentOS-Base.repo", MIRROR, repofiles.variables("6", "x86_64"))
    assert e.value.message.startswith("CentOS-Base.repo")


def test_repo_ids_dnf_takes_are_kept():
    text = "".join(f"[{i}]\nbaseurl=http://m/centos/$releasever/os/$basearch/\n"
                   for i in ("base", "c6-media", "C6.0-base", "centos_kernel", "rhel:7"))
    _, repos = repofiles.rewrite(text, "x.repo", MIRROR, repofiles.variables("6", "x86_64"))
    assert [r.id for r in repos] == ["base", "c6-media", "C6.0-base", "centos_kernel", "rhel:7"]
    assert all(r.baseurl == f"{MIRROR}/os/x86_64" for r in repos)
