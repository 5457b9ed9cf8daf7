"""systemd-networkd .network, .link and .netdev files (systemd.network(5))."""
from __future__ import annotations

from builder.identity.formats.ini import ini_edit
from builder.identity.formats.rename import Rename
from builder.identity.formats.values import addr_value, gw_value, host_value, mac_value, sub_words


def networkd(text: str, r: Rename) -> str:
    """systemd-networkd .network files (and .link/.netdev, systemd.network(5)):

    - [Match] MACAddress= / PermanentMACAddress= (space-separated lists, colon, dash or dotted notation);
      [Link] and [NetDev] MACAddress= (the MAC to set);
    - [Network] Address= and [Address] Address= (ADDR/PREFIX; a given prefix is written), [Route]
      PreferredSource= (the guest's own address), [Network] Gateway= and [Route] Gateway= (Rename.gateways);
    - [DHCPv4] / [DHCP] Hostname= (the name sent to the DHCP server);
    - left: DNS=, Peer=, Destination=, [Address] Broadcast=, `#` and `;` comments."""
    def edit(section: str, key: str, val: str) -> str | None:
        if key in ("MACAddress", "PermanentMACAddress") and section in ("Match", "Link", "NetDev"):
            return sub_words(val, lambda w: mac_value(r, w))
        if key == "Address" and section in ("Network", "Address"):
            return addr_value(r, val, add_prefix=True)
        if key == "PreferredSource" and section == "Route":
            return addr_value(r, val)
        if key == "Gateway" and section in ("Network", "Route"):
            return gw_value(r, val)
        if key == "Hostname" and section in ("DHCPv4", "DHCP"):
            return host_value(r, val)
        return None
    return ini_edit(text, edit, "#;")
