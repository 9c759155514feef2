"""The channel of serve's controllers process: each socket is one identity, a watch the client
stops is stopped on the server, and a server that goes away fails what is in flight."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import cast

import pytest

from evroc_compute.api.compute import DISK
from evroc_compute.api.core import NAMESPACE
from evroc_compute.client.base import ClientError
from evroc_compute.client.channel import ChannelClient
from evroc_compute.server import channel
from evroc_compute.server.app import App
from evroc_compute.server.auth.users import CONTROLLERS, FLEET_SIMULATOR_USER, UserInfo
from evroc_compute.server.http import Request, Response, StreamingResponse
from evroc_compute.store.base import StoreUnavailable


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    app = App(tmp_path, compact_interval=3600, bookmark_interval=0.05)
    await app.start()
    yield app
    await app.stop()


def served(app: App, user: UserInfo) -> tuple[asyncio.Task[None], socket.socket]:
    ours, theirs = socket.socketpair()
    return asyncio.create_task(channel.serve(app, ours, user)), theirs


def watchers(app: App) -> int:
    """The store's open watches of Disks."""
    assert app.ctx is not None
    return sum(len(w) for resource, w in app.ctx.store._watchers.items() if "disks" in resource)


def namespace(name: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


async def test_a_channel_acts_as_its_identity_and_no_other(app: App) -> None:
    _, controllers_end = served(app, CONTROLLERS)
    _, simulator_end = served(app, FLEET_SIMULATOR_USER)
    async with ChannelClient(controllers_end, "controllers") as controllers, \
            ChannelClient(simulator_end, "simulator") as simulator:
        await controllers.create(NAMESPACE, namespace("made-by-controllers"))
        with pytest.raises(ClientError) as refused:
            await simulator.create(NAMESPACE, namespace("not-the-simulators"))
    assert refused.value.code == 403 and refused.value.reason == "Forbidden"
    assert "system:fleet-simulator" in refused.value.status["message"]


async def test_a_watch_the_client_stops_is_stopped_on_the_server(app: App) -> None:
    _, end = served(app, CONTROLLERS)
    async with ChannelClient(end, "test") as client:
        _, version = await client.list(DISK, "default")
        watch = client.watch(DISK, "default", resource_version=version)
        await client.create(DISK, {"apiVersion": DISK.api_version, "kind": "Disk",
                                   "metadata": {"name": "d", "namespace": "default"},
                                   "spec": {"diskSize": {"amount": 1, "unit": "GB"}}})
        event = await anext(watch)
        assert event.type == "ADDED" and event.object["metadata"]["name"] == "d"
        assert watchers(app) == 1
        await watch.aclose()
        for _ in range(100):
            if not watchers(app):
                break
            await asyncio.sleep(0.01)
        assert watchers(app) == 0


async def test_a_refused_watch_is_a_client_error(app: App) -> None:
    _, end = served(app, FLEET_SIMULATOR_USER)
    async with ChannelClient(end, "test") as client:
        with pytest.raises(ClientError) as refused:
            async for _ in client.watch(NAMESPACE):
                pass
    assert refused.value.code == 403


async def test_when_the_server_closes_the_channel_requests_fail_and_the_client_is_told(
        app: App) -> None:
    serving, end = served(app, CONTROLLERS)
    lost: list[bool] = []
    async with ChannelClient(end, "test", on_lost=lambda: lost.append(True)) as client:
        _, version = await client.list(DISK, "default")

        async def watch() -> None:
            async for _ in client.watch(DISK, "default", resource_version=version):
                pass

        waiting = asyncio.create_task(watch())
        await asyncio.sleep(0.05)
        serving.cancel()  # the server goes away: its end of the socket closes
        with pytest.raises(ClientError) as ended:
            await waiting
        assert ended.value.code == 503
        with pytest.raises(ClientError) as unavailable:
            await client.get(DISK, "default", "anything")
        assert unavailable.value.code == 503 and "closed" in str(unavailable.value)
    assert lost == [True]


class Streaming:
    """An App whose every request is answered by `route` (to break a watch on purpose)."""

    def __init__(self, route: Callable[[Request], Awaitable[Response | StreamingResponse]]) -> None:
        self.route = route


SERVING: set[asyncio.Task[None]] = set()


def over(route: Callable[[Request], Awaitable[Response | StreamingResponse]]) -> ChannelClient:
    ours, theirs = socket.socketpair()
    task = asyncio.create_task(channel.serve(cast(App, Streaming(route)), ours, CONTROLLERS))
    SERVING.add(task)
    task.add_done_callback(SERVING.discard)
    return ChannelClient(theirs, "test")


async def test_a_watch_that_breaks_on_the_server_ends_and_a_store_outage_is_a_503() -> None:
    async def route(request: Request) -> StreamingResponse:
        if request.query.get("watch") != "true":
            raise StoreUnavailable("the database went away")

        async def lines() -> AsyncIterator[bytes]:
            yield b'{"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"7"}}}\n'
            raise RuntimeError("the watch broke")
        return StreamingResponse(lines())

    async with over(route) as client:
        async def watch() -> list[str]:
            return [event.type async for event in client.watch(DISK, "default")]

        seen = await asyncio.wait_for(watch(), 5)
        assert seen == ["BOOKMARK"]  # then it ended, as an HTTP watch whose server failed ends
        with pytest.raises(ClientError) as unavailable:
            await client.get(DISK, "default", "d")
    assert unavailable.value.code == 503 and "database went away" in str(unavailable.value)


async def test_a_watch_that_falls_far_behind_is_stopped_so_the_informer_lists_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from evroc_compute.client import channel as client_channel

    monkeypatch.setattr(client_channel, "MAX_BACKLOG", 5)
    stopped = asyncio.Event()

    async def route(request: Request) -> StreamingResponse:
        async def lines() -> AsyncIterator[bytes]:
            try:
                for number in range(1000):
                    yield b'{"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"%d"}}}\n' \
                        % number
                    await asyncio.sleep(0)
                await asyncio.sleep(60)
            finally:
                stopped.set()
        return StreamingResponse(lines())

    async with over(route) as client:
        watch = client.watch(DISK, "default")
        first = await anext(watch)
        await asyncio.sleep(0.2)  # a consumer busy elsewhere while the chunks pile up
        seen = [first]
        with pytest.raises(ClientError) as behind:
            async for event in watch:
                seen.append(event)
        assert behind.value.code == 410 and behind.value.expired
        assert len(seen) <= 6
        await asyncio.wait_for(stopped.wait(), 5)  # and the server stopped streaming it
