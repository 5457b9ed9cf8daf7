"""/etc/hosts: the guest's own lines renamed, other hosts' lines (and the original's, in a cluster's file) kept."""
from __future__ import annotations

import re

from builder.identity.formats.rename import Rename
from builder.identity.formats.values import addr_value, host_value, parse_ip, split_lines


def hosts(text: str, r: Rename) -> str:
    """/etc/hosts: the guest's own lines (its old address, or an old name) get the new address and names; aliases
    on them stay, other hosts' lines stay, and so do names and addresses inside comments.

    Loopback lines (127.0.1.1 vm0, or 127.0.0.1 vm0 localhost as RHEL 5 wrote it) are the guest's own: their old
    names are renamed, the loopback address and the localhost names stay. When the file already lists the new
    address or the new name on another line (a cluster hosts file copied from vm0 that has vm1 and vm2), the
    guest's old non-loopback lines are left too: they are the entries for the original, which still runs."""
    lines = split_lines(text)
    entries = []
    for i, line in enumerate(lines):
        content = line.split("#", 1)[0]
        words = [(m.start(), m.end(), m.group()) for m in re.finditer(r"\S+", content)]
        if not words:
            continue
        ip = parse_ip(words[0][2])
        if ip is None:
            continue
        names = words[1:]
        own = ip in r.ips or any(host_value(r, w) is not None for _, _, w in names)
        entries.append((i, ip, words[0], names, own))
    present_addrs = {ip for _, ip, _, _, own in entries if not own and not ip.is_loopback}
    present_names = {w.split(".")[0].lower() for _, ip, _, names, own in entries if not own and not ip.is_loopback
                     for _, _, w in names}
    knows_new = any(n.ip in present_addrs for o, n in r.ips.items() if n.ip != o) or \
        bool(r.hostname and r.hostname.lower() in present_names)
    for i, ip, (a0, a1, addr), names, own in entries:
        if not own or (knows_new and not ip.is_loopback):
            continue
        edits = [(a0, a1, addr_value(r, addr))] + [(s, e, host_value(r, w)) for s, e, w in names]
        line, pieces, at = lines[i], [], 0
        for s, e, new in edits:                # in order, not overlapping: one pass (a line may be long)
            if new is not None:
                pieces += [line[at:s], new]
                at = e
        lines[i] = "".join(pieces) + line[at:]
    return "\n".join(lines)
