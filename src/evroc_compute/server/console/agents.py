"""The console of a VM on a separately run agent's host, read through that agent.

As kube-apiserver reaches a kubelet for `pods/log` (--kubelet-client-certificate, and with
--kubelet-certificate-authority the kubelet's certificate verified), the server connects to
the URL the host's agent published in `status.agentEndpoint`, trusting exactly the serving
certificate published beside it (so only that agent's key answers), and presents its own
client certificate (CN `system:apiserver`, made in its PKI). The user was authorized before:
the agent trusts the server, as a kubelet trusts the API server it serves.

What the agent answers is relayed as it arrives; a follow ends when the agent's stream ends,
and the connection to the agent is closed when the client leaves (the stream is cancelled).
An agent that cannot be reached, or refuses the server, is a 503 naming the host and its
address; an agent without the VM's console answers as a VM not running does (400).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import orjson

from evroc_compute.server import errors
from evroc_compute.server.http import Response, StreamingResponse

log = logging.getLogger(__name__)
TEXT = b"text/plain; charset=utf-8"
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0  # for a whole console without follow; a follow waits as long as it lasts
MAX_CONTEXTS = 64  # TLS contexts kept, one per agent certificate


def unreachable(message: str) -> errors.ApiError:
    """A 503 without Retry-After: an agent that is down stays down for a while, and clients
    (client-go) would retry a Retry-After answer ten times before saying why."""
    return errors.ApiError(503, "ServiceUnavailable", message)


class AgentConsoles:
    """Reads consoles from agents with the server's client certificate (`client`: its
    certificate and key files; None: this server has none, so it reads from no agent)."""

    def __init__(self, client: tuple[Path, Path] | None) -> None:
        self.client = client
        self._contexts: dict[str, ssl.SSLContext] = {}

    def _context(self, certificate: str) -> ssl.SSLContext:
        context = self._contexts.get(certificate)
        if context is None:
            assert self.client is not None
            context = ssl.create_default_context(cadata=certificate)
            context.load_cert_chain(*self.client)
            if len(self._contexts) >= MAX_CONTEXTS:
                self._contexts.clear()
            self._contexts[certificate] = context
        return context

    async def read(self, host: str, endpoint: dict[str, Any], namespace: str, name: str,
                   lines: int | None, follow: bool,
                   not_running: errors.ApiError) -> Response | StreamingResponse:
        """The console as the agent answers it; `not_running` when it has none (yet)."""
        url = str(endpoint.get("url") or "")
        if self.client is None:
            raise unreachable(
                f'the serial console of VirtualMachine "{name}" is on host "{host}", whose agent '
                "serves it at " + url + "; this server has no client certificate for agents "
                "(it was started without its PKI)")
        query = {"follow": "true"} if follow else {}
        if lines is not None:
            query["tailLines"] = str(lines)
        target = f"{url.rstrip('/')}/console/{quote(namespace)}/{quote(name)}?{urlencode(query)}"
        try:
            context = self._context(str(endpoint.get("certificate") or ""))
        except (ssl.SSLError, ValueError) as problem:
            raise unreachable(f'host "{host}" published no usable agent certificate: '
                                     f"{problem}") from None
        client = httpx.AsyncClient(verify=context, timeout=httpx.Timeout(
            READ_TIMEOUT, connect=CONNECT_TIMEOUT, read=None if follow else READ_TIMEOUT))
        streaming = False
        try:
            answer = await client.send(client.build_request("GET", target), stream=True)
            if answer.status_code == 404:
                raise not_running  # no console there: the guest has not started
            if answer.status_code != 200:
                raise _refusal(host, url, answer.status_code, await answer.aread())
            if not follow:
                return Response(200, await answer.aread(), TEXT)
            streaming = True
            return StreamingResponse(_relay(client, answer), TEXT)
        except httpx.HTTPError as problem:
            raise unreachable(
                f'cannot reach the agent of host "{host}" at {url} for the serial console of '
                f'VirtualMachine "{name}": {str(problem) or type(problem).__name__}') from None
        finally:
            if not streaming:
                await client.aclose()


def _refusal(host: str, url: str, code: int, body: bytes) -> errors.ApiError:
    """The agent refused this server (the user was authorized already, and the request is
    well formed): a misconfiguration between the two, a 503 with the agent's reason."""
    try:
        message = str(orjson.loads(body)["message"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        message = body[:200].decode(errors="replace")
    return unreachable(f'the agent of host "{host}" at {url} refused this server '
                              f"({code}): {message}")


async def _relay(client: httpx.AsyncClient, answer: httpx.Response) -> AsyncIterator[bytes]:
    try:
        async for chunk in answer.aiter_raw():
            yield chunk
    except httpx.HTTPError as problem:
        log.info("the console stream from %s ended: %s", answer.url, problem)
    finally:
        await answer.aclose()
        await client.aclose()
