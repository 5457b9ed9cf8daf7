"""GnuPG's machine-readable answer (--status-fd): which keys made good signatures, and what is wrong."""
from __future__ import annotations

WEAK_HASHES = {"1", "2", "3"}     # MD5, SHA1, RIPEMD160 (RFC 4880 hash ids): signatures apt no longer accepts


def status(out: str) -> tuple[list[str], list[str]]:
    """(fingerprints of the primary keys that made good signatures, problems) from gpgv --status-fd output.

    Good: GOODSIG then VALIDSIG with a hash apt accepts. A signature by a key the keyring lacks (NO_PUBKEY),
    or by an expired or revoked key, counts for nothing but is no reason to refuse when another is good, as
    with apt (Debian signs with the keys of several releases); a bad signature (BADSIG), a weak hash or any other
    gpgv error refuses the file."""
    good, problems, pending = [], [], False
    for line in out.splitlines():
        if not line.startswith("[GNUPG:] "):
            continue
        word, *args = line[9:].split()
        if word == "NEWSIG":
            pending = False
        elif word == "GOODSIG":
            pending = True
        elif word == "VALIDSIG" and pending and len(args) >= 8:
            if args[7] in WEAK_HASHES:
                problems.append(f"signature by {args[0]} uses a weak hash (algorithm {args[7]})")
            else:
                good.append(args[-1] if len(args) >= 10 else args[0])
            pending = False
        elif word == "BADSIG":
            problems.append(f"bad signature by {args[0] if args else '?'}")
        elif word == "ERROR" and not (args and args[0] == "keydb_search"):
            problems.append(" ".join([word, *args]))
        elif word == "ERRSIG" and len(args) >= 6 and args[5] != "9":    # 9: no public key, handled above
            problems.append(f"cannot check the signature by {args[0]} (gpgv error {args[5]})")
    return good, problems
