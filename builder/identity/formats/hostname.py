"""/etc/hostname and /etc/HOSTNAME."""
from __future__ import annotations

import re

from builder.identity.formats.rename import Rename
from builder.identity.formats.values import host_value, splice, split_lines


def hostname_file(text: str, r: Rename) -> str:
    """/etc/hostname (and /etc/HOSTNAME): the name line, short (vm0) or FQDN (vm0.example.com, RHEL 7 style);
    the domain is kept. Comment lines (systemd allows them) are left."""
    out = []
    for line in split_lines(text):
        m = re.match(r"^(?P<pre>[ \t]*)(?P<name>[^\s#]+)(?P<post>[ \t\r]*)$", line)
        out.append(splice(line, m, "name", host_value(r, m.group("name"))) if m else line)
    return "\n".join(out)
