"""Real signers for tests: a GnuPG home with a fresh ed25519 key (its agent stopped afterwards), its public keyring
exported to a file, and an ssh key with an allowed-signers file."""
from __future__ import annotations

import contextlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator


@dataclass
class GpgSigner:
    home: Path
    fingerprint: str
    keyring: Path            # the public key, as `imgbuild verify --keyring` takes it

    def env(self) -> dict[str, str]:
        return dict(os.environ, GNUPGHOME=str(self.home))


def _gpg(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["gpg", "--batch", "--homedir", str(home), *args], capture_output=True, text=True,
                          timeout=60, check=True)


@contextlib.contextmanager
def gpg_signer(where: Path, uid: str = "imgbuild test <signer@example.invalid>") -> Iterator[GpgSigner]:
    home = Path(where) / "gnupg"
    home.mkdir(mode=0o700)
    try:
        _gpg(home, "--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", "never")
        fpr = next(line.split(":")[9] for line in _gpg(home, "--with-colons", "-K").stdout.splitlines()
                   if line.startswith("fpr:"))
        keyring = Path(where) / "signer.gpg"
        keyring.write_bytes(subprocess.run(["gpg", "--batch", "--homedir", str(home), "--export", fpr],
                                           capture_output=True, timeout=60, check=True).stdout)
        yield GpgSigner(home, fpr, keyring)
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True, timeout=60)


@dataclass
class SshSigner:
    key: Path
    allowed_signers: Path


def ssh_signer(where: Path, principal: str = "builds@example.invalid") -> SshSigner:
    key = Path(where) / "signer_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", principal, "-f", str(key)], check=True,
                   timeout=60)
    allowed = Path(where) / "allowed_signers"
    allowed.write_text(f"{principal} {Path(str(key) + '.pub').read_text().strip()}\n")
    return SshSigner(key, allowed)
