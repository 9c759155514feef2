"""What the metadata service answers a VM, path by path (EC2 and OpenStack styles)."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest

from evroc_compute.hosts.network import names
from evroc_compute.hosts.network.metadata import answer

VM: dict[str, Any] = {
    "metadata": {"namespace": "p", "name": "web", "uid": "1234-abcd"},
    "spec": {"osSettings": {"ssh": {"authorizedKeys": [{"value": "ssh-ed25519 AAA a"},
                                                       {"value": "ssh-ed25519 BBB b"}]}}},
    "status": {"networking": {"privateIPv4Address": "10.0.1.5", "publicIPv4Address": "198.51.100.9"},
               "placement": {"zone": "se-sto-a"}}}
SUBNET = ipaddress.IPv4Network("10.0.1.0/24")


@pytest.mark.parametrize(("path", "status", "body"), [
    ("/latest/meta-data/instance-id", 200, "1234-abcd"),
    ("/latest/meta-data/local-ipv4", 200, "10.0.1.5"),
    ("/latest/meta-data/public-ipv4", 200, "198.51.100.9"),
    ("/latest/meta-data/hostname", 200, "web"),
    ("/latest/meta-data/public-keys/", 200, "0=key0\n1=key1"),
    ("/latest/meta-data/public-keys/1/openssh-key", 200, "ssh-ed25519 BBB b"),
    ("/latest/meta-data/public-keys/2/openssh-key", 404, "not found\n"),
    ("/latest/user-data", 200, "#cloud-config\n"),
    ("/openstack/latest/user_data", 200, "#cloud-config\n"),
    ("/openstack", 200, "latest"),  # the versions: cloud-init waits for this answer
    ("/nothing", 404, "not found\n"),
])
def test_ec2_paths(path: str, status: int, body: str) -> None:
    assert answer(VM, path, b"#cloud-config\n", SUBNET)[:2] == (status, body.encode())


def test_the_listing_names_what_there_is() -> None:
    listing = answer(VM, "/latest/meta-data/", b"", SUBNET)[1].decode().splitlines()
    assert {"instance-id", "local-ipv4", "public-ipv4", "public-keys/"} <= set(listing)
    no_public = {**VM, "status": {"networking": {"privateIPv4Address": "10.0.1.5"}}}
    assert "public-ipv4" not in answer(no_public, "/latest/meta-data/", b"", SUBNET)[1].decode()
    assert answer(no_public, "/latest/meta-data/public-ipv4", b"", SUBNET)[0] == 404


def test_openstack_documents() -> None:
    meta = json.loads(answer(VM, "/openstack/latest/meta_data.json", b"", SUBNET)[1])
    assert meta["uuid"] == "1234-abcd" and meta["availability_zone"] == "se-sto-a"
    assert meta["public_keys"] == {"key0": "ssh-ed25519 AAA a", "key1": "ssh-ed25519 BBB b"}
    network = json.loads(answer(VM, "/openstack/latest/network_data.json", b"", SUBNET)[1])
    assert network["links"][0]["ethernet_mac_address"] == names.mac("1234-abcd")
    assert network["networks"][0]["ip_address"] == "10.0.1.5"
    assert network["networks"][0]["routes"][0]["gateway"] == "10.0.1.1"
    assert network["networks"][0]["gateway"] == "10.0.1.1"  # what cloud-init's ENI renders
