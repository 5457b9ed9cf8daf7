"""What the migrate tests push: a small OS-like tree with every kind of entry rsync -aHAXS must carry, and the
directory it goes to on a test host (tests/support/sshhost.py)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

DEST = "/srv/newos"
N_FILES = 600


def make_tree(root: Path) -> Path:
    """A small OS-like tree with everything rsync -aHAXS must carry: owners, setuid, hardlinks, symlinks, devices,
    a fifo, xattrs, an ACL, a sparse file; and per-host files that push must not send."""
    for i in range(N_FILES):
        d = root / "usr" / "share" / f"d{i % 20:02d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:04d}").write_text(f"file {i}\n" * (1 + i % 7))
    (root / "etc" / "ssh").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("source-host\n")
    (root / "etc" / "ssh" / "ssh_host_ed25519_key").write_text("SOURCE PRIVATE KEY\n")
    (root / "etc" / "app.conf").write_text("setting = 1\n")
    (root / "usr" / "bin").mkdir(parents=True)
    su = root / "usr" / "bin" / "su"
    su.write_bytes(b"\x7fELF fake su\n")
    os.chmod(su, 0o4755)
    os.link(su, root / "usr" / "bin" / "su-hardlink")
    os.symlink("su", root / "usr" / "bin" / "su-link")
    owned = root / "usr" / "share" / "owned"
    owned.write_text("owned by 1234:5678\n")
    os.chown(owned, 1234, 5678)
    (root / "dev").mkdir()
    os.mknod(root / "dev" / "null", 0o666 | 0o020000, os.makedev(1, 3))
    os.mknod(root / "dev" / "sda", 0o660 | 0o060000, os.makedev(8, 0))
    os.mkfifo(root / "dev" / "initctl")
    os.setxattr(root / "etc" / "app.conf", "user.imgbuild", b"xattr value")
    subprocess.run(["setfacl", "-m", "u:1234:r", str(root / "etc" / "app.conf")], check=True)
    sparse = root / "var" / "lib" / "sparse.img"
    sparse.parent.mkdir(parents=True)
    with open(sparse, "wb") as f:
        f.truncate(64 << 20)
        f.seek(32 << 20)
        f.write(b"middle")
    for d in ("proc", "sys", "tmp", "run"):
        (root / d).mkdir()
    (root / "tmp" / "scratch").write_text("never sent\n")
    return root
