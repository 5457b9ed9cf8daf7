"""netplan YAML (/etc/netplan/*.yaml), edited line by line so that its comments stay."""
from __future__ import annotations

import re
from collections.abc import Callable

from builder.identity.formats.rename import Rename
from builder.identity.formats.values import addr_value, gw_value, host_value, mac_value, parse_ip, split_lines

_YAML_SCALAR = re.compile(r"""^(?P<q>["']?)(?P<v>[^"'#\s\[\]{},]+)(?P=q)(?P<post>[ \t]*+(?:#.*)?[ \t\r]*+)$""")
_YAML_KEY = re.compile(r"""^(?P<key>"[^"]*"|'[^']*'|[^\s#'"\[\]{},:](?:[^#:]*[^#: \t])?)[ \t]*:"""
                       r"""(?:[ \t]+(?P<val>(?:.*[^ \t\r])?))?[ \t\r]*$""")


def _yaml_scalar(value: str, fn: Callable[[str], str | None]) -> str | None:
    m = _YAML_SCALAR.match(value)
    if not m:
        return None
    new = fn(m.group("v"))
    return None if new is None else value[:m.start("v")] + new + value[m.end("v"):]


def _yaml_flow(value: str, fn: Callable[[str], str | None]) -> str | None:
    m = re.match(r"^\[(?P<body>[^\]]*)\]", value)
    if not m:
        return None
    body = re.sub(r"""(?P<q>["']?)(?P<v>[^"',\s]+)(?P=q)""",
                  lambda x: x.group("q") + (fn(x.group("v")) or x.group("v")) + x.group("q"), m.group("body"))
    return "[" + body + "]" + value[m.end():]


def netplan(text: str, r: Rename) -> str:
    """netplan YAML (/etc/netplan/*.yaml), edited line by line (a YAML dumper would drop the comments):

    - macaddress: (under match:, and the interface's own MAC), quoted or not;
    - addresses: of an interface, as a flow list ([10.0.3.2/24, "fd00::2/64"]) or a block list (`- 10.0.3.2/24`,
      also the `- 10.0.3.2/24:` form with options); a given prefix is written;
    - gateway4: / gateway6:, and via: of routes (Rename.gateways);
    - hostname: under dhcp4-overrides/dhcp6-overrides;
    - left: nameservers: addresses (other hosts), set-name:, interface IDs, comments."""
    lines = split_lines(text)
    stack: list[tuple[int, str, str | None]] = []     # (indent, key, parent key)

    def parent_of(col: int, strict: bool) -> tuple[str | None, str | None]:
        while stack and (stack[-1][0] >= col if strict else stack[-1][0] > col):
            stack.pop()
        return (stack[-1][1], stack[-1][2]) if stack else (None, None)

    def address(v: str) -> str | None:
        return addr_value(r, v, add_prefix=True)

    for i, line in enumerate(lines):
        s = line.strip()
        if not s or s.startswith("#") or s in ("---", "..."):
            continue
        indent = len(line) - len(line.lstrip(" "))
        body_at = indent
        item = re.match(r"^(-[ \t]+)", line[indent:])
        if item or line[indent:].rstrip() == "-":
            owner, owner_parent = parent_of(indent, strict=False)
            body_at = indent + (len(item.group(1)) if item else 1)
            body = line[body_at:]
            km = _YAML_KEY.match(body)
            in_addresses = owner == "addresses" and owner_parent != "nameservers"
            if km is None or (in_addresses and parse_ip(body.split("/")[0].strip("'\" ")) is not None):
                if in_addresses:
                    if km is not None:     # `- 10.0.3.2/24:` with options below
                        key = km.group("key")
                        new = _yaml_scalar(key, address)
                        if new is not None:
                            lines[i] = line[:body_at] + new + body[len(key):]
                        stack.append((body_at, "-", owner))
                    else:
                        new = _yaml_scalar(body, address)
                        if new is not None:
                            lines[i] = line[:body_at] + new
                continue
            line_key_col = body_at
            parent = owner
        else:
            km = _YAML_KEY.match(line[indent:])
            if km is None:
                continue
            line_key_col = indent
            parent, _ = parent_of(indent, strict=True)
        key = km.group("key").strip("'\"")
        stack.append((line_key_col, key, parent))
        val = km.group("val")
        if val is None:
            continue
        fn: Callable[[str], str | None] | None = None
        if key == "macaddress":
            fn = lambda v: mac_value(r, v)
        elif key == "addresses" and parent != "nameservers":
            fn = address
        elif key in ("gateway4", "gateway6", "via"):     # via: only exists in routes
            fn = lambda v: gw_value(r, v)
        elif key == "hostname" and parent in ("dhcp4-overrides", "dhcp6-overrides"):
            fn = lambda v: host_value(r, v)
        if fn is None:
            continue
        new = _yaml_flow(val, fn) if val.startswith("[") else _yaml_scalar(val, fn)
        if new is not None and new != val:
            start = line_key_col + km.start("val")
            lines[i] = line[:start] + new + line[start + len(val):]
    return "\n".join(lines)
