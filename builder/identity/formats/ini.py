"""INI-like files (systemd-networkd units, NetworkManager keyfiles): the value of a key in a section edited,
comments and everything else kept."""
from __future__ import annotations

import re
from collections.abc import Callable

from builder.identity.formats.values import VALUE, splice, split_lines

_INI_SECTION = re.compile(r"^[ \t]*\[(?P<name>[^\]]*)\][ \t\r]*$")
_INI_KEY = re.compile(r"^(?P<pre>[ \t]*)(?P<key>[^=\s\[#;](?:[^=]*[^= \t])?)(?P<sep>[ \t]*=[ \t]*)" + VALUE)


def ini_edit(text: str, edit: Callable[[str, str, str], str | None], comments: str) -> str:
    lines = split_lines(text)
    section = ""
    for i, line in enumerate(lines):
        s = line.lstrip()
        if not s or s[0] in comments:
            continue
        m = _INI_SECTION.match(line)
        if m:
            section = m.group("name").strip()
            continue
        m = _INI_KEY.match(line)
        if m:
            new = edit(section, m.group("key"), m.group("val"))
            if new is not None and new != m.group("val"):
                lines[i] = splice(line, m, "val", new)
    return "\n".join(lines)
