"""The NoCloud seed: how a VM learns its identity, SSH keys and network on first boot.

cloud-init's NoCloud datasource reads three files from any filesystem labelled `cidata`;
the minimal guest's init script reads the same files. Building their contents is a pure
function (tested without QEMU); writing the ISO is a separate, tiny step.
"""

from __future__ import annotations

import base64
import binascii
import io
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pycdlib
import yaml

from .errors import SeedError

GUEST_USER = "evroc-user"  # the user evroc creates in every Linux guest
VOLUME_LABEL = "cidata"  # the label NoCloud looks for
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
# What plain-text user-data starts with: cloud-config, scripts, includes, MIME multipart.
_PLAIN_PREFIXES = ("#", "Content-Type:", "MIME-Version:")


@dataclass(frozen=True)
class StaticNetwork:
    """A fixed private IPv4 configuration for the VM's one NIC."""

    mac_address: str  # identifies the NIC in the guest, e.g. "52:54:00:12:34:56"
    address: ipaddress.IPv4Interface  # address and prefix, e.g. 10.0.2.15/24
    gateway: ipaddress.IPv4Address | None = None
    nameservers: tuple[ipaddress.IPv4Address, ...] = ()


@dataclass(frozen=True)
class SeedFiles:
    """The contents of the three NoCloud files."""

    meta_data: str
    user_data: bytes  # bytes: decoded user-data may be gzip, which cloud-init accepts
    network_config: str | None  # None: the guest's default (DHCP on the first NIC)


def decode_user_data(value: str) -> bytes:
    """The user-data a VM spec gives, which evroc allows as base64 or as plain text.

    Text that starts like user-data (`#cloud-config`, `#!`, MIME) is plain; otherwise it is
    decoded if it is valid base64, and kept as it is if not.
    """
    if value.lstrip().startswith(_PLAIN_PREFIXES):
        return value.encode()
    compact = "".join(value.split())
    try:
        return base64.b64decode(compact, validate=True) if compact else b""
    except binascii.Error:
        return value.encode()


def default_user_data(ssh_authorized_keys: Sequence[str]) -> bytes:
    """A #cloud-config creating evroc-user with the keys and passwordless sudo."""
    config = {
        "users": [{
            "name": GUEST_USER,
            "shell": "/bin/bash",
            "sudo": "ALL=(ALL) NOPASSWD:ALL",
            "lock_passwd": True,
            "ssh_authorized_keys": [key.strip() for key in ssh_authorized_keys],
        }],
        "ssh_pwauth": False,
    }
    return b"#cloud-config\n" + _dump(config).encode()


def network_config(network: StaticNetwork) -> str:
    """A version 2 network-config giving the NIC with that MAC a static address."""
    mac = network.mac_address.lower()
    if not _MAC.match(mac):
        raise SeedError(f"invalid MAC address {network.mac_address!r}: expected six "
                        "colon-separated hex bytes like 52:54:00:12:34:56")
    if network.gateway is not None and network.gateway not in network.address.network:
        raise SeedError(f"gateway {network.gateway} is outside the VM's network "
                        f"{network.address.network}")
    ethernet: dict[str, object] = {"match": {"macaddress": mac},
                                   "addresses": [str(network.address)]}
    if network.gateway is not None:
        ethernet["gateway4"] = str(network.gateway)
    if network.nameservers:
        ethernet["nameservers"] = {"addresses": [str(ns) for ns in network.nameservers]}
    return _dump({"version": 2, "ethernets": {"primary": ethernet}})


def seed_files(
    *,
    instance_id: str,
    hostname: str,
    ssh_authorized_keys: Sequence[str] = (),
    user_data: str | None = None,
    network: StaticNetwork | None = None,
) -> SeedFiles:
    """The NoCloud files for one VM: instance-id is the VM's uid, hostname its name.

    The keys also go into meta-data's `public-keys`, so a guest whose custom user-data
    does not create evroc-user still gets them for its image's default user.
    """
    if not instance_id:
        raise SeedError("instance-id must not be empty: use the VM's uid")
    if not hostname:
        raise SeedError("hostname must not be empty: use the VM's name")
    keys = [key.strip() for key in ssh_authorized_keys if key.strip()]
    meta: dict[str, object] = {"instance-id": instance_id, "local-hostname": hostname}
    if keys:
        meta["public-keys"] = keys
    return SeedFiles(
        meta_data=_dump(meta),
        user_data=decode_user_data(user_data) if user_data is not None else default_user_data(keys),
        network_config=network_config(network) if network is not None else None,
    )


def write_seed_iso(files: SeedFiles, path: Path) -> None:
    """Write the files to an ISO 9660 image labelled `cidata` (Joliet and Rock Ridge names)."""
    contents = {"meta-data": files.meta_data.encode(), "user-data": files.user_data}
    if files.network_config is not None:
        contents["network-config"] = files.network_config.encode()
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=VOLUME_LABEL)
    for name, data in contents.items():
        iso_name = "/" + name.replace("-", "").upper()[:8] + ".;1"
        iso.add_fp(io.BytesIO(data), len(data), iso_name, rr_name=name, joliet_path="/" + name)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    try:
        iso.write(str(partial))
    finally:
        iso.close()
    partial.replace(path)


def _dump(document: object) -> str:
    # One line per value, never folded: the minimal guest reads these files with grep/sed.
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False, width=1 << 30)
