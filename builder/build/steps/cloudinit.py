"""cloud-init: a NoCloud seed (meta-data, user-data, network-config v2) from the recipe's `cloud_init:`.

The seed goes into the guest at /var/lib/cloud/seed/nocloud/ (where cloud-init's NoCloud source looks without
any disk) and, with the disk target, next to the disk as NAME.seed.iso (ISO 9660 volume `cidata` holding the
three files, as cloud-init looks for it on a CD-ROM or disk). meta-data names the guest (instance-id and
local-hostname are its host name) and network-config is the recipe's `network:` as netplan-style version 2, so a
clone (imgbuild clone, install-lxc of a cluster's nodes) gets its own seed: the identity engine rewrites the
host name, address and MAC in these files as in the guest's other network files, and a new instance-id makes
cloud-init treat the clone as a new instance.

user-data may carry passwords and keys: it is written 0600 in a 0700 directory, never logged, and an output
that carries it (the tree, the seed ISO) is treated as one holding a secret (0600). `disable: true` instead
writes /etc/cloud/cloud-init.disabled: cloud-init stays installed but never runs (a container that does not want
it). The ISO is made with xorriso under SOURCE_DATE_EPOCH, so a rebuild writes the same bytes.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import yaml

from builder.core import proc as runner
from builder.core.errors import InputError
from builder.core.schema import FieldError, opt

if TYPE_CHECKING:
    from builder.build.context import Context
    from builder.build.recipe import Recipe
    from builder.build.steps.network import Interface

log = logging.getLogger("imgbuild")

SEED_DIR = "/var/lib/cloud/seed/nocloud"
DISABLED = "/etc/cloud/cloud-init.disabled"
LABEL = "cidata"
FILES = ("meta-data", "user-data", "network-config")
ISO_KIND = "seed-iso"


@dataclass(frozen=True)
class CloudInit:
    """A cloud-init NoCloud seed for the guest, or cloud-init switched off."""

    user_data: dict[str, Any] = opt(factory=dict, doc="cloud-config for user-data (written after a #cloud-config "
                                                      "line); may hold passwords and keys: never logged, 0600")
    user_data_file: str | None = opt(None, doc="a local file to use as user-data instead (relative to the recipe; "
                                               "#cloud-config, a script, anything cloud-init reads)")
    network: bool = opt(True, doc="network-config (version 2) from the recipe's network:, dns: and search:")
    guest: bool = opt(True, doc="write the seed into the guest at /var/lib/cloud/seed/nocloud/")
    iso: bool = opt(True, doc="with the disk target: the seed as NAME.seed.iso (volume cidata) next to the disk")
    disable: bool = opt(False, doc="write no seed but /etc/cloud/cloud-init.disabled: cloud-init never runs in "
                                   "this guest (a container that does not want it)")

    def __post_init__(self) -> None:
        if self.user_data and self.user_data_file:
            raise FieldError("user_data_file", "give user_data or user_data_file, not both")
        if self.disable and (self.user_data or self.user_data_file):
            raise FieldError("disable", "cloud-init would never read the user-data: drop disable or the user-data")


def meta_data(hostname: str) -> str:
    return yaml.safe_dump({"instance-id": hostname, "local-hostname": hostname}, sort_keys=False)


def user_data(opts: CloudInit) -> bytes:
    if opts.user_data_file:
        try:
            return Path(opts.user_data_file).read_bytes()
        except OSError as e:
            raise InputError(f"cloud_init.user_data_file: cannot read {opts.user_data_file}: {e.strerror}") from None
    return ("#cloud-config\n" + yaml.safe_dump(_plain(opts.user_data), sort_keys=False)).encode()


def _plain(v: Any) -> Any:
    """Recipe values (read-only mappings, tuples) as plain YAML data."""
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def network_config(network: Mapping[str, "Interface"], dns: tuple = (), search: tuple = ()) -> str:
    """netplan-style version 2: one ethernet per interface, matched by MAC when the recipe gives one."""
    eths: dict[str, Any] = {}
    for name, i in network.items():
        e: dict[str, Any] = {}
        if i.mac:
            e["match"] = {"macaddress": i.mac.lower()}
            e["set-name"] = name
        if i.dhcp:
            e["dhcp4"] = True
        else:
            e["addresses"] = [ipaddress.ip_interface(i.address).with_prefixlen]
            if i.gateway is not None:
                default = "0.0.0.0/0" if i.gateway.version == 4 else "::/0"
                e["routes"] = [{"to": default, "via": str(i.gateway)}]
        if dns or search:
            e["nameservers"] = {k: [str(x) for x in v] for k, v in (("addresses", dns), ("search", search)) if v}
        eths[name] = e
    return yaml.safe_dump({"version": 2, "ethernets": eths}, sort_keys=False)


def seed(r: "Recipe") -> dict[str, bytes]:
    """The seed's files for this recipe's guest: meta-data, user-data and (unless network: false) network-config."""
    opts = r.cloud_init
    out = {"meta-data": meta_data(r.hostname).encode(), "user-data": user_data(opts)}
    if opts.network and r.network:
        out["network-config"] = network_config(r.network, r.dns, r.search).encode()
    return out


def makes_iso(r: "Recipe") -> bool:
    """Whether the build writes NAME.seed.iso (cloud_init: with its ISO, and the disk target on)."""
    opts = r.cloud_init
    return opts is not None and not opts.disable and opts.iso and r.targets.disk is not None


def secrets(r: "Recipe") -> list[str]:
    """Where the recipe's user-data ends up (never its value), for the outputs' modes and manifest.json."""
    opts = r.cloud_init
    if opts is None or opts.disable or not (opts.user_data or opts.user_data_file):
        return []
    where = ([f"{SEED_DIR}/user-data"] if opts.guest else []) + (["the seed ISO"] if makes_iso(r) else [])
    return [f"{w}: cloud-init user-data" for w in where]


def run(ctx: "Context", opts: CloudInit | None) -> None:
    if opts is None:
        return
    root = ctx.root
    if opts.disable:
        root.write(DISABLED, "# written by imgbuild: cloud-init does not run in this guest\n", 0o644)
        log.info("cloud-init: disabled (%s)", DISABLED)
        return
    if not (root.exists("/usr/bin/cloud-init") or root.exists("/bin/cloud-init")):
        log.warning("cloud_init: the tree has no cloud-init, so nothing in it reads the seed; add cloud-init to "
                    "bootstrap.packages")
    root.remove(DISABLED)
    if not opts.guest:
        return
    root.mkdir("/var/lib/cloud", 0o755)
    root.mkdir("/var/lib/cloud/seed", 0o755)
    root.remove(SEED_DIR, tree=True)
    root.mkdir(SEED_DIR, 0o700)
    for name, data in seed(ctx.recipe).items():
        root.write(f"{SEED_DIR}/{name}", data, 0o600)
    log.info("cloud-init: NoCloud seed in %s (instance-id %s)", SEED_DIR, ctx.recipe.hostname)


def write_iso(files: Mapping[str, bytes], dest: Path, epoch: int) -> Path:
    """A NoCloud seed ISO (volume cidata; Rock Ridge and Joliet names) at dest, 0600, written atomically."""
    dest = Path(dest)
    with tempfile.TemporaryDirectory(prefix=".seed-", dir=dest.parent) as tmp:
        src = Path(tmp) / "cidata"
        src.mkdir(mode=0o700)
        for name, data in sorted(files.items()):
            fd = os.open(src / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.utime(src / name, (epoch, epoch))
        os.utime(src, (epoch, epoch))
        part = Path(tmp) / "seed.iso"
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(epoch)}
        runner.run(["xorriso", "-abort_on", "FAILURE", "-as", "mkisofs", "-quiet", "-output", str(part), "-volid",
                    LABEL, "-joliet", "-rock", "-input-charset", "utf-8", str(src)], env=env)
        os.chmod(part, 0o600)
        os.replace(part, dest)
    return dest


def produce_iso(ctx: "Context") -> dict[str, Path]:
    """With the disk target: NAME.seed.iso in the stage, next to the disk ({} when the recipe asks for none)."""
    opts = ctx.recipe.cloud_init
    if opts is None or opts.disable or not opts.iso:
        return {}
    path = write_iso(seed(ctx.recipe), ctx.stage / f"{ctx.recipe.name}.seed.iso", ctx.epoch)
    log.info("cloud-init: seed ISO %s (volume %s)", path.name, LABEL)
    return {ISO_KIND: path}

