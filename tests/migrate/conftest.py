"""The migrate xen tests' pair of hosts (tests/support/sshhost.py, tests/support/xenguest.py)."""
import subprocess

import pytest

from tests.support.xenguest import FAKE_XL, FAKE_XM, XM_CFG, make_guest_image


@pytest.fixture
def xen_hosts(two_sshhosts, tmp_path):
    """(src, dst): a Xen 3 source holding the guest www (tests/support/xenguest.py) and mock xm, a destination
    with mock xl and a bridge ifcfg-xenbr0."""
    src, dst = two_sshhosts
    img = make_guest_image(tmp_path)
    (src.root / "var/xen").mkdir(parents=True)
    subprocess.run(["cp", "--sparse=always", str(img), str(src.root / "var/xen/www.img")], check=True)
    (src.root / "etc/xen").mkdir(parents=True)
    (src.root / "etc/xen/www.cfg").write_text(XM_CFG)
    for host, name, text in ((src, "xm", FAKE_XM), (dst, "xl", FAKE_XL)):
        p = host.root / "usr/sbin" / name
        p.write_text(text)
        p.chmod(0o755)
    (src.root / "run/xm-www").write_text("running\n")
    nets = dst.root / "etc/sysconfig/network-scripts"
    nets.mkdir(parents=True)
    (nets / "ifcfg-xenbr0").write_text("DEVICE=xenbr0\nTYPE=Bridge\nBOOTPROTO=none\nONBOOT=yes\n")
    return src, dst
