"""The Driver contract, one suite for every driver: it reports what is, and every action is
idempotent (an agent that crashed may ask for anything twice).

The simulated driver runs in the fast suite; the QEMU driver (real guests) in the slow one.
Each instance is driven by the agent's own loop (`converge`) as far as the lifecycle goes, and
the driver's methods are then called directly, twice, to check that a repeat changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from evroc_compute.hosts.agent import converge
from evroc_compute.hosts.driver import Driver
from evroc_compute.hosts.drivers.qemu import images
from evroc_compute.hosts.drivers.qemu.driver import QemuDriver, QemuHostConfig
from evroc_compute.hosts.drivers.sim import SimDriver
from evroc_compute.hosts.lifecycle import HotswapWant
from evroc_compute.runtime.settings import Settings
from evroc_compute.runtime.world import World
from tests.qemu.conftest import minimal_image, requires_qemu, store  # noqa: F401 (fixtures)

SETTINGS = Settings(backoff_base=1, backoff_max=2)
NAMESPACE = "default"
WANT: HotswapWant = {"attachment": "hot", "disk": "data", "serial": "evroc-contract"}


@dataclass
class Subject:
    driver: Driver
    instance: dict[str, Any]
    timeout: float  # how long the guest may take to come up or go down


def new_instance(image: str) -> dict[str, Any]:
    return {"metadata": {"namespace": NAMESPACE, "name": "contract", "uid": "u-1"},
            "spec": {"host": "h1", "running": True, "disksReady": True,
                     "disks": [{"name": "boot", "boot": True, "image": image}],
                     "resources": {"vcpu": 1, "memoryBytes": 256 << 20}},
            "status": {}}


async def sim_subject(tmp_path: Path) -> AsyncIterator[Subject]:
    yield Subject(SimDriver(SETTINGS), new_instance("ubuntu.24-04.1"), timeout=5)


async def qemu_subject(tmp_path: Path, image_store: images.ImageStore,
                       image: images.StoredImage) -> AsyncIterator[Subject]:
    world = World(None)  # type: ignore[arg-type]  # caches filled by hand, never synced
    world.vms.cache[(NAMESPACE, "contract")] = {
        "metadata": {"namespace": NAMESPACE, "name": "contract", "uid": "u-1"},
        "spec": {}, "status": {"networking": {"privateIPv4Address": "10.0.1.5"}}}
    for name, spec in [("boot", {"diskImage": {"diskImageRef": {"name": image.name}}}),
                       ("data", {"diskSize": {"amount": 1, "unit": "GB"}})]:
        world.disks.cache[(NAMESPACE, name)] = {
            "metadata": {"namespace": NAMESPACE, "name": name, "uid": f"u-{name}"}, "spec": spec,
            "status": {"diskSize": {"amount": 1, "unit": "GB"}}}
    world.images.cache[("", image.name)] = {"metadata": {"name": image.name}, "spec": {}}
    config = QemuHostConfig(name="h1", zone="se-sto-a", data_dir=tmp_path / "data",
                            image_dir=image_store.root, accel="tcg", stop_timeout=10)
    driver = QemuDriver(world, SETTINGS, config)
    subject = Subject(driver, new_instance(image.name), timeout=180)
    try:
        yield subject
    finally:
        await driver.remove(subject.instance)
        for pidfile in (tmp_path / "data").rglob("*.pid"):
            with contextlib.suppress(ValueError, ProcessLookupError):
                os.kill(int(pidfile.read_text().strip()), signal.SIGKILL)


@pytest.fixture(params=["sim", pytest.param("qemu", marks=[pytest.mark.slow, requires_qemu,
                                                           pytest.mark.timeout(600)])])
def images_for(request: pytest.FixtureRequest) -> tuple[images.ImageStore, images.StoredImage] | None:
    """The image store and the minimal image for the QEMU driver; None for the simulated one."""
    if request.param == "sim":
        return None
    return request.getfixturevalue("store"), request.getfixturevalue("minimal_image")


@pytest.fixture
async def subject(images_for: tuple[images.ImageStore, images.StoredImage] | None,
                  tmp_path: Path) -> AsyncIterator[Subject]:
    subjects = sim_subject(tmp_path) if images_for is None else qemu_subject(tmp_path, *images_for)
    async for value in subjects:
        yield value


async def _no_report(instance: dict[str, Any], status: dict[str, Any]) -> None:
    return None


async def drive(subject: Subject, running: bool, phase: str) -> dict[str, Any]:
    """Run the agent's loop over the instance until it reports `phase`."""
    subject.instance = {**subject.instance,
                        "spec": {**subject.instance["spec"], "running": running}}
    deadline = time.monotonic() + subject.timeout
    while True:
        done = await converge(subject.driver, subject.instance, time.time(), SETTINGS, _no_report)
        subject.instance = {**subject.instance, "status": done.status}
        if done.status.get("phase") == phase:
            return done.status
        assert time.monotonic() < deadline, f"not {phase} in {subject.timeout} s: {done.status}"
        await asyncio.sleep(min(done.wait or 0.2, 0.5))


async def test_an_unknown_instance_has_no_guest(subject: Subject) -> None:
    seen = await subject.driver.observe(subject.instance)
    assert seen.state == "off" and dict(seen.plugged) == {}


async def test_start_attach_detach_stop_remove_each_twice(subject: Subject) -> None:
    driver = subject.driver
    status = await drive(subject, running=True, phase="Running")
    assert status["bootCount"] == 1

    # start again: the running guest is left alone
    assert await driver.start(subject.instance) is None
    again = await driver.observe(subject.instance)
    assert again.state == "up"
    assert (await drive(subject, running=True, phase="Running"))["bootCount"] == 1

    # plug a disk twice: one device, shown as plugged
    device = await driver.attach(subject.instance, WANT)
    assert await driver.attach(subject.instance, WANT) == device
    assert dict((await driver.observe(subject.instance)).plugged) == {WANT["serial"]: device}

    # unplug it twice: gone
    await driver.detach(subject.instance, WANT["serial"])
    await driver.detach(subject.instance, WANT["serial"])
    assert WANT["serial"] not in (await driver.observe(subject.instance)).plugged

    # stop, then stop again: off
    await drive(subject, running=False, phase="Stopped")
    await driver.stop(subject.instance)
    assert (await driver.observe(subject.instance)).state == "off"

    # remove twice: nothing left
    await driver.remove(subject.instance)
    await driver.remove(subject.instance)
    assert (await driver.observe({**subject.instance, "status": {}})).state == "off"
