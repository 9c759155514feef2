"""The ASGI application: route a request to discovery, OpenAPI or a verb handler.

Paths are those of kube-apiserver, also under kcp's `/clusters/<name>/` prefix that evroc's
kubeconfigs use (every cluster name serves the same API and data; see docs/api-decisions.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import logging
import platform
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from evroc_compute import __version__, collector
from evroc_compute.api.core import NAMESPACE
from evroc_compute.api.identity import CREDENTIAL
from evroc_compute.api.kinds import Kind, Registry
from evroc_compute.api.registry import default_registry
from evroc_compute.server import (
    audit,
    errors,
    expiry,
    fairness,
    metrics,
    namespaces,
    projects,
    reviews,
)
from evroc_compute.server.auth.authn import (
    CLIENT_CERT,
    Authenticator,
    ClientCertificate,
    TokenAuthenticator,
    unauthorized,
)
from evroc_compute.server.auth.authz import (
    Attributes,
    Authorizer,
    forbidden,
    request_verb,
)
from evroc_compute.server.auth.escalation import EscalationCheck
from evroc_compute.server.auth.hosts import HostAuthorizer
from evroc_compute.server.auth.oidc import OidcAuthenticator
from evroc_compute.server.auth.rbac import RbacAuthorizer
from evroc_compute.server.auth.union import Union
from evroc_compute.server.auth.users import ANONYMOUS_USER, MASTERS, UserInfo
from evroc_compute.server.console import pages as console_pages
from evroc_compute.server.console import session as console_session
from evroc_compute.server.console.agents import AgentConsoles
from evroc_compute.server.console.oidc_login import DEFAULT_SCOPES, OidcLogin
from evroc_compute.server.console.serial import serial_console
from evroc_compute.server.conversion import ConvertingStore
from evroc_compute.server.discovery import Discovery
from evroc_compute.server.handlers.common import (
    Context,
    Target,
    ensure_namespace,
    new_object_metadata,
)
from evroc_compute.server.handlers.create import create
from evroc_compute.server.handlers.delete import delete, delete_collection
from evroc_compute.server.handlers.get import get
from evroc_compute.server.handlers.list import list_objects
from evroc_compute.server.handlers.patch import patch
from evroc_compute.server.handlers.update import update
from evroc_compute.server.handlers.watch import watch
from evroc_compute.server.http import (
    ClientGone,
    Receive,
    Request,
    Response,
    Scope,
    Send,
    StreamingResponse,
    error_response,
    json_response,
    lifespan,
    read_request,
    refuse_websocket,
)
from evroc_compute.server.openapi import OpenAPI
from evroc_compute.server.openapi_v2 import OpenAPIV2
from evroc_compute.store import urls
from evroc_compute.store.base import (
    Entry,
    KeyExists,
    KeyNotFound,
    RevisionConflict,
    Store,
    StoreUnavailable,
)

log = logging.getLogger(__name__)
requests_log = logging.getLogger("evroc_compute.requests")  # one line per request, at debug

AnyResponse = Response | StreamingResponse


def version_info() -> dict[str, str]:
    return {"major": "1", "minor": "32", "gitVersion": f"v1.32.0+evroc-compute.{__version__}",
            "gitCommit": "", "gitTreeState": "clean", "buildDate": "", "goVersion": "",
            "compiler": "cpython", "platform": f"{platform.system().lower()}/{platform.machine()}"}


class App:
    def __init__(self, data_dir: Path, *, store_url: str = "", registry: Registry | None = None,
                 compact_interval: float = 300.0, compact_keep: int = 1000,
                 bookmark_interval: float = 5.0, max_watches: int = 0,
                 body_timeout: float = 60.0, event_ttl: float = 3600.0,
                 token_authenticators: tuple[TokenAuthenticator, ...] = (),
                 admin_certificates: tuple[str, ...] = (), admin_token_hash: str = "",
                 limits: fairness.Limits | None = None,
                 audit_log: audit.AuditLog | None = None,
                 control_plane: bool = False,
                 agent_client: tuple[Path, Path] | None = None, console_key: bytes = b"",
                 console_scopes: str = DEFAULT_SCOPES) -> None:
        self.data_dir = data_dir
        self.agent_consoles = AgentConsoles(agent_client)  # agents' console endpoints
        self.control_plane = control_plane  # new objects get their controlled metadata
        self.store_url = store_url or urls.default_url(data_dir)
        self.registry = registry or default_registry()
        self.compact_interval, self.compact_keep = compact_interval, compact_keep
        self.bookmark_interval = bookmark_interval
        self.event_ttl = event_ttl
        self.ctx: Context | None = None
        self.discovery = Discovery(self.registry)
        self.openapi = OpenAPI(self.registry)
        self.openapi_v2 = OpenAPIV2(self.registry)
        self._background: list[asyncio.Task[None]] = []
        self._version = orjson.dumps(version_info())
        self.max_watches = max_watches  # 0: no limit
        self.body_timeout = body_timeout  # seconds for a request body to arrive
        self.watches = 0  # open over HTTP
        self.admin_token_hash = admin_token_hash  # sha256 of the PKI's admin token secret
        self.limits = limits or fairness.Limits()  # per user
        self.audit = audit_log
        self.authenticator = Authenticator(self._lookup, token_authenticators,
                                           admin_certificates)
        # The console's OIDC sign-in, with the API's issuer; `console_key` seals its cookie
        # (servers that share a PKI share it; a random one serves a lone server as well).
        oidc = next((t for t in token_authenticators if isinstance(t, OidcAuthenticator)), None)
        self.oidc_login = OidcLogin(oidc, console_key or secrets.token_bytes(32),
                                    console_scopes) if oidc else None
        self.hosts = HostAuthorizer(self._lookup)
        self.rbac = RbacAuthorizer(lambda: self.ctx.store if self.ctx else None)
        self.authorizer: Authorizer = Union(self.hosts, self.rbac)  # kube's Node,RBAC
        self.metrics_registry = CollectorRegistry(auto_describe=False)
        self.metrics_registry.register(metrics.WorldCollector(
            self.registry, lambda: self.ctx.store if self.ctx else None))

    def _lookup(self, key: str) -> Entry | None:
        return self.ctx.store.get(key) if self.ctx is not None else None

    # ---- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        store = await asyncio.to_thread(urls.store, self.store_url)
        await store.open()
        if self.audit is not None:
            self.audit.start()
        self.ctx = Context(self.registry, store, self.bookmark_interval, guard=EscalationCheck(
            self.authorizer, self.rbac.rules, self._lookup), control_plane=self.control_plane)
        await self._seed(store)
        await self._finish_deletions(store)
        self._background.append(asyncio.create_task(
            store.compact_forever(self.compact_interval, self.compact_keep), name="compactor"))
        self._background.append(asyncio.create_task(
            expiry.sweep_forever(store, self.event_ttl), name="event-expiry"))
        self._background.append(asyncio.create_task(collector.keep_collections_short(),
                                                    name="gc-freeze"))

    async def _seed(self, store: Store) -> None:
        """Write the catalog and `default` namespace if absent; admins' edits are kept."""
        for kind in self.registry.kinds:
            for seed in kind.seed:
                obj = copy.deepcopy(seed)
                target = Target(kind, None, obj["metadata"]["name"])
                if store.get(target.key) is None:
                    new_object_metadata(obj, target)
                    with contextlib.suppress(KeyExists):  # another server seeded it first
                        await store.create(target.key, obj)
        if self.admin_token_hash:
            await self._seed_admin_token(store)

    async def _seed_admin_token(self, store: Store) -> None:
        """The Credential of the PKI's admin token; its hash follows the PKI (a PKI directory
        made anew after the store outlived the old one brings a new token)."""
        target = Target(CREDENTIAL, None, ADMIN_TOKEN_CREDENTIAL)
        spec = {"user": "admin", "groups": [MASTERS], "type": "token",
                "tokenHash": self.admin_token_hash}
        found = store.get(target.key)
        if found is not None and found.obj.get("spec") == {**spec, "revoked": False}:
            return
        obj: dict[str, Any] = {"apiVersion": CREDENTIAL.api_version, "kind": CREDENTIAL.kind,
                               "metadata": {"name": ADMIN_TOKEN_CREDENTIAL},
                               "spec": {**spec, "revoked": False}}
        with contextlib.suppress(KeyExists, RevisionConflict):  # another server wrote it first
            if found is None:
                new_object_metadata(obj, target)
                await store.create(target.key, obj)
            else:
                obj["metadata"] = orjson.loads(found.raw)["metadata"]
                await store.update(target.key, obj, found.revision)

    async def _finish_deletions(self, store: Store) -> None:
        """Delete what is being deleted and has no finalizer left. Removing the last finalizer
        deletes in the same commit; this finishes objects stored by older versions, which
        removed it first and deleted after (a crash in between stranded them)."""
        for kind in self.registry.kinds:
            if "finalize" in kind.subresources or kind.stored_as:  # namespaces go by /finalize
                continue
            entries, _ = await store.list(kind.key_prefix(None))
            for entry in entries:
                meta = entry.obj["metadata"]
                if meta.get("deletionTimestamp") and not meta.get("finalizers"):
                    log.warning("deleting %s: it was being deleted with no finalizer left",
                                entry.key)
                    with contextlib.suppress(KeyNotFound, RevisionConflict):  # another server
                        await store.delete(entry.key, entry.revision)

    async def stop(self) -> None:
        for task in self._background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.ctx:
            await self.ctx.store.close()
        if self.audit is not None:
            await asyncio.to_thread(self.audit.close)

    # ---- ASGI -------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send, self.start, self.stop)
            return
        if scope["type"] == "websocket":
            await refuse_websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        received = time.time()
        req: Request | None = None
        watching = False
        admitted: tuple[str, bool] | None = None  # the user's fairness slot, if taken
        try:
            req = await read_request(scope, receive, self.body_timeout)
            req.user = self._authenticate(req, scope)
            admitted = self._admit(req)
            watching = self._admit_watch(req)
            response = await self.route(req)
        except ClientGone:
            self._release(admitted, watching)
            return
        except Exception as problem:
            response = error_response(as_api_error(problem, scope.get("method"), scope.get("path")))
        labels = req.labels if req is not None and req.labels else _unrouted(scope["method"])
        try:
            if isinstance(response, StreamingResponse):
                await self._stream(response, labels, send, receive)
            else:
                await response.send(send)
        finally:
            self._release(admitted, watching)
            elapsed = time.perf_counter() - started
            metrics.observe(labels, response.status, elapsed)
            if requests_log.isEnabledFor(logging.DEBUG):
                _log_request(scope, response.status, elapsed)
            if self.audit is not None:
                self.audit.record(_audit_record(scope, req, response.status, received, elapsed,
                                                self.audit.keeps_bodies))

    def _authenticate(self, req: Request, scope: Scope) -> UserInfo:
        certificate: ClientCertificate | None = scope.get("extensions", {}).get(CLIENT_CERT)
        authorization = req.headers.get("authorization", "")
        console = console_pages.is_console(req.path)
        session = not authorization and certificate is None and not (
            console and console_pages.public(req))
        if session:
            authorization = console_session.authorization(req)  # the console's session, if any
        try:
            user = self.authenticator.authenticate(authorization, certificate)
        except errors.ApiError:
            if not (session and console):
                raise
            # A session that ended (its token expired or was revoked): the console's pages
            # treat the browser as signed out and send it to the login.
            user = ANONYMOUS_USER
        if user.anonymous and not console and not _public(req.path):
            raise unauthorized("this request needs a credential: a bearer token or a client "
                               "certificate (evroc-compute kubeconfig prints an admin's)")
        return user

    def _authorize(self, attributes: Attributes, kind: Kind | None = None) -> None:
        decision = self.authorizer.authorize(attributes)
        if not decision.allowed:
            raise forbidden(attributes, decision, kind)

    def _admit(self, req: Request) -> tuple[str, bool]:
        """Take the user's slot for this request (or raise a 429): see fairness."""
        slot = (req.user.name, req.method == "GET" and req.flag("watch"))
        self.limits.admit(*slot)
        return slot

    def _release(self, admitted: tuple[str, bool] | None, watching: bool) -> None:
        if admitted is not None:
            self.limits.release(*admitted)
        self.watches -= watching

    def _admit_watch(self, req: Request) -> bool:
        """Watches may hold at most `max_watches` connections: the rest stay for requests.
        A watch's slot is taken here, before anything awaits, so a burst cannot overrun it;
        returns whether one was taken (the caller gives it back when the request ends)."""
        if req.method != "GET" or not req.flag("watch"):
            return False
        if self.max_watches and self.watches >= self.max_watches:
            raise errors.too_many_requests(
                f"too many open watches ({self.max_watches}); retry later")
        self.watches += 1
        return True

    async def _stream(self, response: StreamingResponse, labels: metrics.Labels, send: Send,
                      receive: Receive) -> None:
        open_now = metrics.longrunning(labels)
        open_now.inc()
        try:
            await response.send(send, receive)  # a watch ends when its client goes away
        finally:
            open_now.dec()

    # ---- routing ----------------------------------------------------------------------

    async def route(self, req: Request) -> AnyResponse:
        parts = [p for p in req.path.split("/") if p]
        if len(parts) >= 2 and parts[0] == "clusters":
            parts = parts[2:]
        head = parts[0] if parts else ""
        if head == "api" and len(parts) >= 3 and parts[1] == "v1":
            return await self._resource(req, "", "v1", parts[2:])
        if head == "apis" and len(parts) >= 4:
            return await self._resource(req, parts[1], parts[2], parts[3:])
        if console_pages.is_console(req.path):  # signed-in users; the API authorizes the data
            req.labels = (req.method, "", "", "", "", "/console", "", "")
            return await console_pages.respond(req, req.user, self.authenticator,
                                               self.oidc_login)
        document = self._document(req, parts)
        req.labels = (req.method, "", "", "", "", f"/{head}", "", "")
        if req.method not in ("GET", "HEAD"):
            raise errors.method_not_allowed(req.method, req.path)
        if not _public(req.path):  # rules name paths as kube serves them, without /clusters/x
            req.attributes = Attributes(req.user, "get", path="/" + "/".join(parts))
            self._authorize(req.attributes)
        return document()

    def _document(self, req: Request, parts: list[str]) -> Callable[[], Response]:
        """What answers a path that is not a resource: a read-only document (or 404)."""
        head = parts[0] if parts else ""
        if not parts:
            return lambda: json_response({"paths": [
                "/api", "/apis", "/healthz", "/livez", "/metrics", "/openapi/v2", "/openapi/v3",
                "/readyz", "/version"]})
        if head in ("healthz", "readyz", "livez"):
            ready = self.ctx is not None
            return lambda: Response(200 if ready else 503, b"ok" if ready else b"starting",
                                    b"text/plain; charset=utf-8")
        if head == "version" and len(parts) == 1:
            return lambda: Response(200, self._version)
        if head == "metrics" and len(parts) == 1:
            return lambda: Response(200, metrics.exposition(self.metrics_registry),
                                    metrics.CONTENT_TYPE)
        if parts == ["openapi", "v2"]:
            return lambda: self.openapi_v2.respond(req)
        if head == "openapi":
            document = self._openapi(parts)
            return lambda: document
        if parts == ["api"]:
            return lambda: self.discovery.api(req)
        if parts == ["apis"]:
            return lambda: self.discovery.apis(req)
        found: Response | None = None
        if parts == ["api", "v1"]:
            found = self.discovery.resources("", "v1")
        elif head == "apis" and len(parts) == 2:
            found = self.discovery.group(parts[1])
        elif head == "apis" and len(parts) == 3:
            found = self.discovery.resources(parts[1], parts[2])
        if found is not None:
            answer: Response = found
            return lambda: answer
        raise _no_path(req)

    def _openapi(self, parts: list[str]) -> Response:
        if parts[1:] == ["v3"]:
            return Response(200, self.openapi.index)
        document = self.openapi.documents.get("/".join(parts[2:])) if len(parts) > 2 else None
        if len(parts) < 2 or parts[1] != "v3" or document is None:
            raise errors.ApiError(404, "NotFound", f"the OpenAPI document /{'/'.join(parts)} does "
                                  "not exist; this server serves OpenAPI v3 at /openapi/v3")
        return Response(200, document, headers=[
            (b"cache-control", b"public, immutable, max-age=31536000")])

    async def _resource(self, req: Request, group: str, version: str,
                        rest: list[str]) -> AnyResponse:
        assert self.ctx is not None
        namespace: str | None = None
        if rest[0] == "namespaces" and len(rest) >= 3 and not (
                group == "" and len(rest) == 3 and rest[2] in NAMESPACE.subresources):
            namespace, rest = rest[1], rest[2:]
        kind = self.registry.resource(group, version, rest[0])
        if kind is None or len(rest) > 3 or (namespace is not None and not kind.namespaced):
            raise _no_path(req)
        if len(rest) == 3 and rest[2] not in kind.subresources:
            raise _no_path(req)
        name = rest[1] if len(rest) > 1 else ""
        subresource = rest[2] if len(rest) > 2 else ""
        if kind.namespaced and name and namespace is None:
            raise _no_path(req)
        target = Target(kind, namespace if kind.namespaced else None, name, subresource)
        ctx = self.ctx
        fresh = await _catch_up(ctx.store, req)
        response = await self._dispatch(ctx, req, target, kind)
        if not fresh and isinstance(response, Response):
            response.headers.append((b"warning", b'299 - "the storage is unreachable: this '
                                     b'answer comes from the server\'s last known state"'))
        return response

    async def _dispatch(self, ctx: Context, req: Request, target: Target,
                        kind: Kind) -> AnyResponse:
        name, namespace, subresource = target.name, target.namespace, target.subresource
        if kind.stored_as is not None:  # another version of a stored kind: convert at the store
            ctx = dataclasses.replace(ctx, store=ConvertingStore(ctx.store, kind.stored_as))
        method = req.method
        # As kube: a request on a namespace is in that namespace (a RoleBinding there covers it).
        scope = name if kind is NAMESPACE else namespace or ""
        req.attributes, req.api_version = Attributes(
            req.user, request_verb(method, bool(name), req.flag("watch")), kind.plural,
            kind.group, scope, name, subresource), kind.version
        self._authorize(req.attributes, kind)
        req.labels = (_verb(req, bool(name)), _dry_run(req), kind.group, kind.version, kind.plural,
                      subresource, "resource" if name or method == "POST"
                      else "namespace" if namespace else "cluster", "apiserver")
        if not kind.stored:
            if method != "POST" or name:
                raise errors.method_not_allowed(method, f"{kind.plural} (create only)")
            return reviews.answer(kind, req, self.authorizer, self.rbac)
        if not name:
            if method == "GET":
                if req.flag("watch"):
                    return await watch(ctx, req, target)
                return await list_objects(ctx, req, target)
            if kind.namespaced and namespace is None:
                raise errors.method_not_allowed(method, f"{kind.plural} across all namespaces; "
                                                "use /namespaces/<namespace>/" + kind.plural)
            if method == "POST" and kind is NAMESPACE:
                return await projects.create_project(ctx, req, target)
            if method == "POST":
                self.hosts.admit_create(req.user, kind, req.decode_body)
                return await create(ctx, req, target)
            if method == "DELETE":
                ensure_namespace(ctx, target, creating=False)
                return await delete_collection(ctx, req, target)
            raise errors.method_not_allowed(method, kind.plural)
        if subresource == "finalize":
            return await namespaces.finalize(ctx, req, target)
        if subresource == "console":
            if method != "GET":
                raise errors.method_not_allowed(method, f"{kind.plural}/{name}/console")
            return await serial_console(ctx, req, target, self.data_dir, self.agent_consoles)
        if method == "GET":
            return await get(ctx, req, target)
        if method == "PUT":
            return await update(ctx, req, target)
        if method == "PATCH":
            return await patch(ctx, req, target)
        if method == "DELETE" and not subresource:
            return await delete(ctx, req, target)
        raise errors.method_not_allowed(method, f"{kind.plural}/{name}")


async def _catch_up(store: Store, req: Request) -> bool:
    """Make this server's memory as new as the request needs, as kube-apiserver does with its
    watch cache: a read at resourceVersion N waits for N; an unset resourceVersion (and every
    write) for everything committed before the request, by any server; "0" waits for nothing.
    False if the store's database cannot be asked (the answer may be stale)."""
    version = req.query.get("resourceVersion", "") if req.method == "GET" else ""
    if version == "0":
        return True
    return await store.sync(int(version) if version.isascii() and version.isdigit() else 0)


ADMIN_TOKEN_CREDENTIAL = "admin"  # the admin token is `admin.<secret>`

# Paths anyone may read, as kube's system:public-info-viewer role allows.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/livez", "/version"})


def _public(path: str) -> bool:
    return path.rstrip("/") in PUBLIC_PATHS or path.startswith(("/healthz/", "/readyz/",
                                                                  "/livez/"))


def _no_path(req: Request) -> errors.ApiError:
    return errors.ApiError(404, "NotFound", f"the server could not find the requested resource "
                           f"({req.method} {req.path})")


_VERBS = {("GET", False): "LIST", ("POST", False): "CREATE", ("DELETE", False): "DELETECOLLECTION",
          ("GET", True): "GET", ("PUT", True): "UPDATE", ("PATCH", True): "PATCH",
          ("DELETE", True): "DELETE"}


def _verb(req: Request, named: bool) -> str:
    """kube's verb label: WATCH for a watching LIST, APPLY for a server-side apply PATCH."""
    verb = _VERBS.get((req.method, named), req.method)
    if verb == "LIST" and req.flag("watch"):
        return "WATCH"
    if verb == "PATCH" and req.content_type == "application/apply-patch+yaml":
        return "APPLY"
    return verb


def _unrouted(method: str) -> metrics.Labels:
    """The metric labels of a request that named nothing this server serves."""
    return (method, "", "", "", "", "", "", "")


def _dry_run(req: Request) -> str:
    """kube's label value: the dryRun parameter if valid, "invalid" if not (bounded)."""
    value = req.query.get("dryRun", "")
    return value if value in ("", "All") else "invalid"


def as_api_error(problem: Exception, method: object, path: object) -> errors.ApiError:
    """What a request that raised `problem` is answered: its own Status, a 503 while the store
    is unavailable, or a 500 (logged with its traceback)."""
    if isinstance(problem, errors.ApiError):
        return problem
    if isinstance(problem, StoreUnavailable):
        return errors.unavailable(f"storage is unavailable: {problem}")
    log.error("internal error on %s %s", method, path, exc_info=problem)
    return errors.ApiError(500, "InternalError",
                           "an internal error occurred; the server log has the details")


def _audit_record(scope: Scope, req: Request | None, code: int, received: float,
                  seconds: float, with_body: bool) -> audit.Record:
    return audit.Record(
        received, seconds, scope["method"], scope["path"], scope.get("query_string", b""),
        scope.get("client"), scope["headers"],
        None if req is None or code == 401 else req.user,
        req.attributes if req is not None else None, req.api_version if req is not None else "",
        code, req.body if req is not None and with_body else b"",
        req.content_type if req is not None and with_body else "")


def _log_request(scope: Scope, code: int, seconds: float) -> None:
    query = scope.get("query_string", b"").decode("latin-1")
    path = scope["path"] + (f"?{query}" if query else "")
    agent = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"user-agent"), "")
    requests_log.debug("%s %s %d %.1fms %s", scope["method"], path, code, seconds * 1000, agent,
                       extra={"method": scope["method"], "path": path, "code": code,
                              "duration": round(seconds, 6), "user_agent": agent})
