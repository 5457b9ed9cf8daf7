"""SHA256SUMS beside the files of a directory, detached signatures of it, and the check of all of them.

SHA256SUMS is what `sha256sum -c SHA256SUMS` reads: one `HASH  NAME` line per file, sorted by name. Signatures
sign SHA256SUMS, so they cover every file it lists:
- SHA256SUMS.asc: GnuPG, ASCII-armored and detached (`gpg --verify SHA256SUMS.asc SHA256SUMS`), the kind of
  signature image servers and download templates publish;
- SHA256SUMS.sig: `ssh-keygen -Y sign -n file` with an ssh key, for hosts that trust ssh keys rather than GnuPG
  (`ssh-keygen -Y verify -f ALLOWED_SIGNERS -I SIGNER -n file -s SHA256SUMS.sig < SHA256SUMS`).
A directory may also carry per-file GnuPG signatures, FILE.asc beside FILE (what LXC's download template checks
when it validates: index-system.asc, rootfs.tar.xz.asc, meta.tar.xz.asc); SHA256SUMS lists them too, and verify
checks each against its file.

A directory to check is not trusted: SHA256SUMS must be a regular file; each line a sha256 and a plain file name
in the directory (never a path, never through a link); every file it names is read without following links.
"""
from __future__ import annotations

import hashlib
import os
import re
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from builder.core import proc as runner
from builder.core.errors import InputError
from builder.core.gpg import status as gpg_status
from builder.core.outputs import CHECKSUM_FILES, file_mode, write_atomic

NAMES = CHECKSUM_FILES
SUMS, GPG_SIG, SSH_SIG = NAMES
FILE_SIG = ".asc"              # FILE.asc: a per-file GnuPG signature
SSH_NAMESPACE = "file"         # ssh-keygen -Y's namespace for signatures of files
_LINE = re.compile(r"^([0-9a-f]{64}) [ *](.+)$")
MAX_SUMS = 1 << 20             # a SHA256SUMS larger than this is not ours


@dataclass(frozen=True)
class Signing:
    """How to sign: a GnuPG key (an id, fingerprint or e-mail of the keyring of GNUPGHOME) and/or an ssh
    private key file."""
    gpg_key: str | None = None
    ssh_key: Path | None = None

    def __bool__(self) -> bool:
        return bool(self.gpg_key or self.ssh_key)

    def describe(self) -> dict:
        return {k: str(v) for k, v in (("gpg", self.gpg_key), ("ssh", self.ssh_key)) if v}


UNSIGNED = Signing()


@dataclass
class Report:
    """What `verify` found in one directory: ok files, problems (each names a file), and notes."""
    directory: Path
    checked: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    signed_by: list[str] = field(default_factory=list)


def _plain(name: str) -> bool:
    return bool(name) and "/" not in name and "\0" not in name and name not in (".", "..")


def render(hashes: dict[str, str]) -> str:
    for name in hashes:
        if not _plain(name) or "\n" in name:
            raise ValueError(f"{name!r} is not a plain file name")
    return "".join(f"{h}  {n}\n" for n, h in sorted(hashes.items()))


def digest(directory: Path, name: str) -> str:
    """sha256 of directory/name, a regular file opened without following a link."""
    fd = os.open(Path(directory) / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise IsADirectoryError(0, "not a regular file", str(Path(directory) / name))
        return hashlib.file_digest(f, "sha256").hexdigest()


def detached_of(listed) -> list[str]:
    """The files of listed (names) that have a per-file signature (FILE.asc) listed beside them."""
    return sorted(n[:-len(FILE_SIG)] for n in listed if n.endswith(FILE_SIG) and n[:-len(FILE_SIG)] in listed)


def write(directory: Path, hashes: dict[str, str], signing: Signing = UNSIGNED, detached=()) -> list[str]:
    """directory/SHA256SUMS of hashes (name -> sha256), signed as signing says; each file named in detached also
    gets FILE.asc (with a GnuPG key; listed in SHA256SUMS). Older signatures are removed first. The names
    written."""
    directory = Path(directory)
    hashes = dict(hashes)
    written = []
    for old in (GPG_SIG, SSH_SIG, *(n + FILE_SIG for n in detached)):
        hashes.pop(old, None)
        try:
            os.unlink(directory / old)
        except FileNotFoundError:
            pass
    for name in detached if signing.gpg_key else ():
        sig = _gpg_sign(directory, signing.gpg_key, name)
        hashes[sig] = digest(directory, sig)
        written.append(sig)
    write_atomic(directory / SUMS, render(hashes))
    written.append(SUMS)
    if signing.gpg_key:
        written.append(_gpg_sign(directory, signing.gpg_key, SUMS))
    if signing.ssh_key:
        written.append(_ssh_sign(directory, signing.ssh_key))
    return written


def resign(directory: Path, signing: Signing, detached=()) -> None:
    """Sign directory's SHA256SUMS again, and each file of detached and each file that already has its FILE.asc,
    only when every file it lists matches (InputError naming the first that does not); old signatures are
    replaced."""
    directory = Path(directory)
    report = Report(directory)
    _check_files(directory, parse(directory, report), report)
    if report.problems:
        raise InputError(f"{directory}: not signed, its files do not match SHA256SUMS: {report.problems[0]}",
                         "build (or publish) it again, then sign")
    listed = parse(directory, Report(directory))
    write(directory, listed, signing, sorted(set(detached) | set(detached_of(listed))))


def check_signing(signing: Signing) -> None:
    """Before any work: the GnuPG key is a secret key of the keyring, the ssh key a file (InputError if not)."""
    if signing.gpg_key:
        r = runner.run(["gpg", "--batch", "--list-secret-keys", "--with-colons", signing.gpg_key], capture=True,
                       check=False)
        if r.returncode != 0 or not any(line.startswith("sec:") for line in r.stdout.splitlines()):
            home = os.environ.get("GNUPGHOME", "~/.gnupg")
            raise InputError(f"--sign {signing.gpg_key}: no such secret key in the GnuPG keyring ({home})",
                             "list your keys with gpg -K; set GNUPGHOME for another keyring")
    if signing.ssh_key and not Path(signing.ssh_key).is_file():
        raise InputError(f"--sign-ssh {signing.ssh_key}: no such file",
                         "give the path of an ssh private key (ssh-keygen -t ed25519 -f FILE)")


def _gpg_sign(directory: Path, key: str, name: str) -> str:
    """directory/name.asc: gpg's armored detached signature of directory/name (a regular file, never a link)."""
    sig = name + FILE_SIG
    if not stat.S_ISREG(os.lstat(directory / name).st_mode):
        raise InputError(f"{directory / name}: not a regular file; not signed", "publish or build it again")
    fd, tmp = tempfile.mkstemp(prefix=f".{sig}.", suffix=".part", dir=directory)
    os.close(fd)
    try:
        runner.run(["gpg", "--batch", "--yes", "--armor", "--local-user", key, "--output", tmp, "--detach-sign",
                    str(directory / name)], capture=True,
                   hint=f"is {key!r} a secret key of your GnuPG keyring (gpg -K)? Set GNUPGHOME for another one")
        os.chmod(tmp, file_mode())
        os.rename(tmp, directory / sig)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    return sig


def _ssh_sign(directory: Path, key: Path) -> str:
    with tempfile.TemporaryDirectory(prefix=".sign-", dir=directory) as d:
        copy = Path(d) / SUMS       # ssh-keygen writes FILE.sig beside FILE
        copy.write_bytes((directory / SUMS).read_bytes())
        runner.run(["ssh-keygen", "-q", "-Y", "sign", "-f", str(key), "-n", SSH_NAMESPACE, str(copy)], capture=True,
                   hint="the key must be an ssh private key without a passphrase, or one ssh-agent holds")
        os.chmod(Path(d) / SSH_SIG, file_mode())
        os.rename(Path(d) / SSH_SIG, directory / SSH_SIG)
    return SSH_SIG


def parse(directory: Path, report: Report) -> dict[str, str]:
    """name -> sha256 from directory/SHA256SUMS; what is wrong with it goes into report.problems."""
    f = Path(directory) / SUMS
    try:
        fd = os.open(f, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        report.problems.append(f"{f}: missing (the directory has no checksums; build or publish it again)")
        return {}
    except OSError as e:
        report.problems.append(f"{f}: {'a symbolic link' if os.path.islink(f) else e.strerror}")
        return {}
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            report.problems.append(f"{f}: not a regular file")
            return {}
        data = fh.read(MAX_SUMS + 1)
    if len(data) > MAX_SUMS:
        report.problems.append(f"{f}: larger than {MAX_SUMS} bytes; not a SHA256SUMS imgbuild writes")
        return {}
    out: dict[str, str] = {}
    for n, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        m = _LINE.match(line)
        if not m or not _plain(m.group(2)) or m.group(2) in NAMES:
            report.problems.append(f"{f}: line {n}: {line[:80]!r} is not `SHA256  NAME` with a file name of "
                                   f"{directory}")
        elif m.group(2) in out:
            report.problems.append(f"{f}: line {n}: {m.group(2)} is listed twice")
        else:
            out[m.group(2)] = m.group(1)
    if not out and not report.problems:
        report.problems.append(f"{f}: lists no file")
    return out


def verify(directory: Path, keyring: Path | None = None, allowed_signers: Path | None = None) -> Report:
    """Check directory's SHA256SUMS (every file it lists, byte for byte) and its signatures. A signature that is
    there is always checked: with keyring (a GnuPG keyring file, as gpgv takes) or else GNUPGHOME's keyring;
    an ssh signature with allowed_signers. Asking for a kind of signature (keyring, allowed_signers) that the
    directory does not have is a problem too."""
    directory = Path(directory)
    report = Report(directory)
    want = parse(directory, report)
    _check_files(directory, want, report)
    try:
        present = set(os.listdir(directory))
    except OSError as e:
        report.problems.append(f"{directory}: {e.strerror}")
        return report
    extra = sorted(present - set(want) - set(NAMES))
    if extra:
        report.notes.append(f"not covered by SHA256SUMS: {', '.join(extra)}")
    if SUMS in present and not os.path.islink(directory / SUMS):
        _check_gpg(directory / GPG_SIG, directory / SUMS, GPG_SIG in present, keyring, report)
        _check_ssh(directory, SSH_SIG in present, allowed_signers, report)
        for name in detached_of(want):
            if name in report.checked and name + FILE_SIG in report.checked:
                _check_gpg(directory / (name + FILE_SIG), directory / name, True, keyring, report)
    return report


def _check_files(directory: Path, want: dict[str, str], report: Report) -> None:
    """Every file of want (name -> sha256) hashed in full: report.checked or a problem naming it."""
    for name, h in sorted(want.items()):
        try:
            got = digest(directory, name)
        except FileNotFoundError:
            report.problems.append(f"{directory / name}: missing")
            continue
        except OSError as e:
            what = "a symbolic link" if os.path.islink(directory / name) else e.strerror
            report.problems.append(f"{directory / name}: {what} (SHA256SUMS lists it)")
            continue
        if got != h:
            report.problems.append(f"{directory / name}: sha256 {got} does not match SHA256SUMS ({h}): the file "
                                   "changed after it was written")
        else:
            report.checked.append(name)


def _check_gpg(sig: Path, data: Path, present: bool, keyring: Path | None, report: Report) -> None:
    """sig, the GnuPG signature of data: good by a key of keyring (else GNUPGHOME's), or a problem naming it."""
    if not present:
        if keyring is not None:
            report.problems.append(f"{sig}: missing (--keyring asks for a GnuPG signature)")
        else:
            report.notes.append("no GnuPG signature (SHA256SUMS.asc)")
        return
    if os.path.islink(sig) or not sig.is_file():
        report.problems.append(f"{sig}: not a regular file")
        return
    argv = (["gpgv", "--status-fd", "1", "--keyring", str(Path(keyring).resolve())] if keyring is not None
            else ["gpg", "--batch", "--status-fd", "1", "--verify"])
    r = runner.run([*argv, str(sig), str(data)], capture=True, check=False)
    good, problems = gpg_status(r.stdout)
    if problems or not good or r.returncode != 0:
        why = "; ".join(problems) or ("no good signature by a key of " + (str(keyring) if keyring else
                                                                           "your GnuPG keyring"))
        report.problems.append(f"{sig}: {why}")
    elif data.name == SUMS:
        report.signed_by += [f"gpg {g}" for g in good]


def _check_ssh(directory: Path, present: bool, allowed: Path | None, report: Report) -> None:
    sig = directory / SSH_SIG
    if not present:
        if allowed is not None:
            report.problems.append(f"{sig}: missing (--allowed-signers asks for an ssh signature)")
        return
    if allowed is None:
        report.notes.append(f"{SSH_SIG} not checked: give --allowed-signers FILE (ssh-keygen's allowed signers)")
        return
    if os.path.islink(sig) or not sig.is_file():
        report.problems.append(f"{sig}: not a regular file")
        return
    found = runner.run(["ssh-keygen", "-Y", "find-principals", "-f", str(allowed), "-s", str(sig)], capture=True,
                       check=False)
    principals = found.stdout.split()
    if found.returncode != 0 or not principals:
        report.problems.append(f"{sig}: not made by a key of {allowed}")
        return
    data = (directory / SUMS).read_bytes()
    r = runner.run(["ssh-keygen", "-Y", "verify", "-f", str(allowed), "-I", principals[0], "-n", SSH_NAMESPACE,
                    "-s", str(sig)], input=data, capture=True, check=False)
    if r.returncode != 0:
        report.problems.append(f"{sig}: bad signature of SHA256SUMS")
    else:
        report.signed_by.append(f"ssh {principals[0]}")


def directories(top: Path) -> list[Path]:
    """top itself when it has a SHA256SUMS, else every directory under it that has one (an image server's tree),
    found without following links."""
    top = Path(top)
    if os.path.lexists(top / SUMS):
        return [top]
    found = []
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        if SUMS in filenames:
            found.append(Path(dirpath))
    return found
