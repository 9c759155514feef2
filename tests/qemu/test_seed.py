"""The NoCloud seed's contents (pure) and its ISO image."""

from __future__ import annotations

import base64
import io
import ipaddress
from pathlib import Path

import pycdlib
import pytest
import yaml

from evroc_compute.hosts.drivers.qemu import seed
from evroc_compute.hosts.drivers.qemu.errors import SeedError

from .conftest import requires_qemu

pytestmark = [pytest.mark.slow, requires_qemu]

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB5s2Qb0bbZpZ0mT2ph0MkqW7jt0B1rvS6mpxh6lz5t5 me@laptop"


def test_meta_data_names_the_instance_by_uid_and_the_host_by_vm_name() -> None:
    files = seed.seed_files(instance_id="6f1c-uid", hostname="web-1", ssh_authorized_keys=[KEY])
    assert yaml.safe_load(files.meta_data) == {
        "instance-id": "6f1c-uid", "local-hostname": "web-1", "public-keys": [KEY]}


def test_default_user_data_creates_evroc_user_with_keys_and_passwordless_sudo() -> None:
    files = seed.seed_files(instance_id="uid", hostname="vm", ssh_authorized_keys=[KEY + "\n"])
    assert files.user_data.startswith(b"#cloud-config\n")
    config = yaml.safe_load(files.user_data)
    assert config["users"] == [{"name": "evroc-user", "shell": "/bin/bash",
                                "sudo": "ALL=(ALL) NOPASSWD:ALL", "lock_passwd": True,
                                "ssh_authorized_keys": [KEY]}]
    assert config["ssh_pwauth"] is False


def test_keys_are_written_on_one_line_each_for_the_minimal_guest_to_grep() -> None:
    long_key = "ssh-rsa " + "A" * 700 + " long@key"
    files = seed.seed_files(instance_id="uid", hostname="vm", ssh_authorized_keys=[long_key])
    assert long_key in files.user_data.decode().splitlines()[-2]
    assert any(line.endswith(long_key) for line in files.meta_data.splitlines())


@pytest.mark.parametrize(("given", "expected"), [
    pytest.param("#cloud-config\nruncmd: [true]\n", b"#cloud-config\nruncmd: [true]\n",
                 id="plain-cloud-config"),
    pytest.param("#!/bin/sh\necho hi\n", b"#!/bin/sh\necho hi\n", id="plain-script"),
    pytest.param(base64.b64encode(b"#cloud-config\n{}\n").decode(), b"#cloud-config\n{}\n", id="base64"),
    pytest.param("I2Nsb3VkLWNvbmZp\nZwp7fQo=\n", b"#cloud-config\n{}\n", id="base64-wrapped-lines"),
    pytest.param("not base64!", b"not base64!", id="neither-kept-as-is"),
    pytest.param("", b"", id="empty"),
])
def test_user_data_may_be_base64_or_plain_text(given: str, expected: bytes) -> None:
    assert seed.decode_user_data(given) == expected


def test_given_user_data_replaces_the_generated_one() -> None:
    files = seed.seed_files(instance_id="uid", hostname="vm", ssh_authorized_keys=[KEY],
                            user_data="#cloud-config\nruncmd: [touch /x]\n")
    assert files.user_data == b"#cloud-config\nruncmd: [touch /x]\n"


def test_no_network_config_without_a_static_address() -> None:
    assert seed.seed_files(instance_id="uid", hostname="vm").network_config is None


def test_static_network_config_matches_the_nic_by_mac() -> None:
    network = seed.StaticNetwork(
        mac_address="52:54:00:AB:CD:EF", address=ipaddress.IPv4Interface("10.0.5.7/24"),
        gateway=ipaddress.IPv4Address("10.0.5.1"), nameservers=(ipaddress.IPv4Address("10.0.5.3"),))
    files = seed.seed_files(instance_id="uid", hostname="vm", network=network)
    assert files.network_config is not None
    assert yaml.safe_load(files.network_config) == {"version": 2, "ethernets": {"primary": {
        "match": {"macaddress": "52:54:00:ab:cd:ef"}, "addresses": ["10.0.5.7/24"],
        "gateway4": "10.0.5.1", "nameservers": {"addresses": ["10.0.5.3"]}}}}


@pytest.mark.parametrize(("network", "message"), [
    pytest.param(seed.StaticNetwork("52:54:00:ab:cd", ipaddress.IPv4Interface("10.0.5.7/24")),
                 "invalid MAC", id="bad-mac"),
    pytest.param(seed.StaticNetwork("52:54:00:ab:cd:ef", ipaddress.IPv4Interface("10.0.5.7/24"),
                                    ipaddress.IPv4Address("10.0.6.1")),
                 "outside the VM's network", id="gateway-elsewhere"),
])
def test_inconsistent_network_settings_are_refused(network: seed.StaticNetwork, message: str) -> None:
    with pytest.raises(SeedError, match=message):
        seed.network_config(network)


@pytest.mark.parametrize(("instance_id", "hostname"), [("", "vm"), ("uid", "")])
def test_identity_is_required(instance_id: str, hostname: str) -> None:
    with pytest.raises(SeedError, match="must not be empty"):
        seed.seed_files(instance_id=instance_id, hostname=hostname)


def test_iso_is_labelled_cidata_and_holds_the_three_files(tmp_path: Path) -> None:
    network = seed.StaticNetwork("52:54:00:12:34:56", ipaddress.IPv4Interface("10.0.2.15/24"))
    files = seed.seed_files(instance_id="uid", hostname="vm", ssh_authorized_keys=[KEY],
                            network=network)
    path = tmp_path / "seed.iso"
    seed.write_seed_iso(files, path)
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        assert iso.pvd.volume_identifier.decode().strip() == "cidata"
        contents = {}
        for name in ("meta-data", "user-data", "network-config"):
            out = io.BytesIO()
            iso.get_file_from_iso_fp(out, rr_path="/" + name)
            contents[name] = out.getvalue()
    finally:
        iso.close()
    assert contents == {"meta-data": files.meta_data.encode(), "user-data": files.user_data,
                        "network-config": (files.network_config or "").encode()}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed.iso"]
