"""Command line: `evroc-compute serve|controllers|agent|images|store|credentials|console|kubeconfig`."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import os
import re
import socket
import ssl
import sys
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Literal

from evroc_compute import credentials_cli, images_cli, logs, store_cli
from evroc_compute.client.kubeconfig import (
    admin_kubeconfig,
    certificate_user,
    control_plane_kubeconfig,
)
from evroc_compute.hosts.fleet import Fleet, FleetError, default_fleet, load_fleet
from evroc_compute.runtime.settings import Settings, Timing
from evroc_compute.server import audit, connections, fairness
from evroc_compute.server.auth.authn import token_hash
from evroc_compute.server.auth.oidc import OidcAuthenticator, OidcConfig
from evroc_compute.server.auth.pki import Pki, serial_of, write_private
from evroc_compute.server.console.oidc_login import DEFAULT_SCOPES
from evroc_compute.store import urls

if TYPE_CHECKING:
    from evroc_compute.cloud import ControllersMode
    from evroc_compute.hosts.drivers.qemu.driver import QemuHostConfig

log = logging.getLogger("evroc_compute")
DEFAULT_DATA_DIR = Path(os.environ.get("EVROC_COMPUTE_DATA_DIR", "./data"))


def _pki(args: argparse.Namespace) -> Pki:
    return Pki(Path(args.pki_dir) if args.pki_dir else Path(args.data_dir) / "pki")


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _fleet(args: argparse.Namespace) -> Fleet:
    """The fleet file's fleet; with a real host, its settings and this one host (steps real)."""
    try:
        fleet = load_fleet(Path(args.fleet)) if args.fleet else None
    except FleetError as problem:
        sys.exit(f"evroc-compute: {problem}")
    if args.driver == "sim":
        return fleet or default_fleet()
    settings = fleet.settings if fleet else Settings(timing=Timing())
    return Fleet(settings=settings, hosts=(_qemu_host(args).host_spec(),))


def _qemu_host(args: argparse.Namespace) -> QemuHostConfig:
    from evroc_compute.hosts.drivers.qemu.driver import QemuHostConfig, detect_accel

    accel = detect_accel() if args.accel == "auto" else args.accel
    try:
        return QemuHostConfig(
            name=args.host_name, zone=args.zone, data_dir=Path(args.data_dir) / "qemu",
            image_dir=Path(args.image_dir) if args.image_dir else images_cli.default_image_dir(),
            accel=accel, cpu_overcommit=args.cpu_overcommit,
            memory_overcommit=args.memory_overcommit, stop_timeout=args.stop_timeout,
            network=_network_mode(args.network), host_netns=args.host_netns,
            underlay=args.underlay_address, cloud_init_source=args.cloud_init_source)
    except ValueError as problem:
        sys.exit(f"evroc-compute: {problem}")


def _network_mode(wanted: str) -> Literal["bridged", "user"]:
    """bridged when asked for (exits if it cannot run) or, with auto, when it can run here."""
    from evroc_compute.hosts.network.linux import missing

    if wanted == "user":
        return "user"
    problem = missing()
    if problem is None:
        return "bridged"
    if wanted == "bridged":
        sys.exit(f"evroc-compute: --network bridged cannot run here: {problem}")
    log.info("user-mode networking: bridged networking cannot run here (%s)", problem)
    return "user"


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|m|s|ms)")
_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def duration(text: str) -> float:
    """A Go-style duration (`1h`, `1h30m`, `90s`, `500ms`) in seconds, for --*-ttl options."""
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 1h, 30m, 90s or 1h30m")
    return sum(float(n) * _SECONDS[u] for n, u in parts)


def serve(args: argparse.Namespace) -> None:
    import uvicorn

    from evroc_compute.cloud import Cloud, Limits

    fleet = _fleet(args)
    qemu_host = _qemu_host(args) if args.driver == "qemu" else None
    if qemu_host is not None:
        log.info("host %s in %s runs VMs with QEMU (%s, %s networking), images in %s",
                 qemu_host.name, qemu_host.zone, qemu_host.accel.upper(), qemu_host.network,
                 qemu_host.image_dir)
    try:
        store_url = urls.check(args.store) if args.store else ""
    except ValueError as problem:
        sys.exit(f"evroc-compute: {problem}")
    cap = _connection_cap(args.max_connections)
    pki = _pki(args)
    pki.ensure([args.host])
    tls = _tls(args, pki)
    own = tuple(serial_of(cert.read_bytes()) for cert in pki.own_certificates)
    admin_token = token_hash(pki.admin_token.read_text().partition(".")[2])
    mode: ControllersMode = "none" if args.no_controllers else args.controllers
    command = _controllers_command(args, pki) if mode == "process" else []
    # Watches may hold half the connections, so open watches cannot lock out requests.
    app = Cloud(Path(args.data_dir), store_url=store_url, fleet=fleet,
                controllers=mode, controllers_command=command, qemu_host=qemu_host,
                compact_interval=args.compact_interval, compact_keep=args.compact_keep,
                max_watches=max(1, cap // 2), body_timeout=args.idle_timeout,
                event_ttl=args.event_ttl, token_authenticators=_oidc(args),
                admin_certificates=own, admin_token_hash=admin_token,
                agent_client=(pki.agent_client_cert, pki.agent_client_key),
                limits=Limits(args.max_requests_per_user, args.max_watches_per_user),
                audit_log=_audit_log(args), console_key=_console_key(pki),
                console_scopes=args.oidc_console_scopes)
    where = urls.redacted(store_url) if store_url else f"data in {Path(args.data_dir).resolve()}"
    scheme = "http" if args.insecure_http else "https"
    log.info("serving on %s://%s:%d (%s)", scheme, args.host, args.port, where)
    log.info("web console: %s://%s:%d/console/ (log in with the token that `evroc-compute "
             "kubeconfig` prints)", scheme, args.host, args.port)
    config = uvicorn.Config(
        app, host=args.host, port=args.port, log_level=args.log_level, log_config=None, **tls,
        access_log=args.access_log, loop="uvloop", http=connections.limited(cap, args.idle_timeout),
        timeout_keep_alive=args.idle_timeout, backlog=4096,
        # Open watches would otherwise hold a graceful shutdown (Ctrl-C) for up to their
        # timeout (30 min): give requests 3 s, then cancel what remains.
        timeout_graceful_shutdown=3)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            # The controllers process ends first: its watches would hold the graceful shutdown,
            # and it would log the server going away.
            app.stopping()
            super().handle_exit(sig, frame)

    server = Server(config)
    with contextlib.suppress(KeyboardInterrupt):  # the signal uvicorn re-raises when it is done
        server.run()
    if not server.started:
        sys.exit(3)  # as uvicorn.run: it could not start (the error is logged)


def _controllers_command(args: argparse.Namespace, pki: Pki) -> list[str]:
    """`serve --controllers process`: the command line of its controllers process, which reaches
    serve through sockets it inherits (`--channels`, added at each start). For a control plane
    run apart (`evroc-compute controllers --server URL`), serve also writes the PKI's
    controller-manager and fleet-simulator certificates into a kubeconfig."""
    if args.driver != "sim":
        sys.exit("evroc-compute: --controllers process runs the simulated fleet's control plane; "
                 "with --driver qemu run the controllers in-process (or this host as "
                 "`evroc-compute agent`)")
    if not (args.insecure_http or args.tls_cert):
        host = "127.0.0.1" if args.host in ("", "0.0.0.0", "::") else args.host
        url = f"https://{'[' + host + ']' if ':' in host else host}:{args.port}"
        users = {"controllers": certificate_user(pki.controllers_cert.read_bytes(),
                                                 pki.controllers_key.read_bytes()),
                 "fleet-simulator": certificate_user(pki.simulator_cert.read_bytes(),
                                                     pki.simulator_key.read_bytes())}
        write_private(pki.controllers_kubeconfig,
                      control_plane_kubeconfig(url, pki.ca_cert.read_bytes(), users).encode())
    command = [sys.executable, "-m", "evroc_compute.cli", "controllers", "--log-level",
               args.log_level, "--log-format", args.log_format]
    return command + (["--fleet", str(Path(args.fleet).resolve())] if args.fleet else [])


CONTROLLERS_IN_FLIGHT = 256


async def _run_controllers(args: argparse.Namespace) -> None:
    import asyncio

    from evroc_compute import collector, controlplane
    from evroc_compute.client import kubeconfig as kubeconfigs
    from evroc_compute.client.base import Client, ClientError
    from evroc_compute.client.channel import ChannelClient
    from evroc_compute.client.http import HttpClient

    try:
        fleet = load_fleet(Path(args.fleet)) if args.fleet else default_fleet()
        if not (args.channels or args.kubeconfig):
            sys.exit("evroc-compute: controllers needs --kubeconfig (the server and the "
                     "control plane's credentials)")
        if not args.channels:
            connection = kubeconfigs.load(Path(args.kubeconfig))
            simulator = kubeconfigs.load(Path(args.kubeconfig), args.simulator_context)
    except (FleetError, kubeconfigs.KubeconfigError) as problem:
        sys.exit(f"evroc-compute: {problem}")
    identity = args.identity or f"{socket.gethostname()}:{os.getpid()}:controllers"
    running = asyncio.current_task()
    assert running is not None
    lost: list[str] = []

    def server_gone() -> None:  # the channels cannot be reopened: this process is done
        lost.append("the server closed its channel")
        running.cancel()

    async with contextlib.AsyncExitStack() as stack:
        client: Client
        simulated: Client
        if args.channels:
            ours, simulator_end = (socket.socket(fileno=int(fd))
                                   for fd in args.channels.split(","))
            client = await stack.enter_async_context(ChannelClient(
                ours, "evroc-compute-controllers", on_lost=server_gone))
            simulated = await stack.enter_async_context(ChannelClient(
                simulator_end, "evroc-compute-fleet-simulator", on_lost=server_gone))
            where = "serve's channels"
        else:
            # As many requests in flight as the controllers' workers and the scheduler's
            # batches make (the server does not count the control plane's users against
            # --max-requests-per-user): writes that wait for one group commit together are
            # committed together.
            http = await stack.enter_async_context(HttpClient(
                args.server, "evroc-compute-controllers", connection=connection,
                max_connections=CONTROLLERS_IN_FLIGHT))
            client, simulated = http, await stack.enter_async_context(HttpClient(
                args.server, "evroc-compute-fleet-simulator", connection=simulator,
                max_connections=CONTROLLERS_IN_FLIGHT))
            where = ",".join(http.servers)
        log.info("controllers: %d simulated hosts, serving %s as %s", len(fleet.hosts), where,
                 identity)
        collecting = asyncio.create_task(collector.keep_collections_short(), name="gc-freeze")
        try:
            await controlplane.run(client, simulated, fleet, identity)
        except ClientError as problem:  # e.g. its credential refused: say so in one line
            sys.exit(f"evroc-compute: controllers: {problem}")
        except asyncio.CancelledError:
            if lost:
                sys.exit(f"evroc-compute: controllers: {lost[0]}")
            raise
        finally:
            collecting.cancel()


def controllers(args: argparse.Namespace) -> None:
    import asyncio

    import uvloop

    with contextlib.suppress(KeyboardInterrupt), \
            asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_run_controllers(args))


def _fairness_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-requests-per-user", type=int, default=fairness.DEFAULT_MAX_REQUESTS,
                        help="requests one user may have in flight (default %(default)s, 0: no "
                             "limit); more are refused with 429 and Retry-After")
    parser.add_argument("--max-watches-per-user", type=int, default=fairness.DEFAULT_MAX_WATCHES,
                        help="watches one user may have open (default %(default)s, 0: no limit)")


def _audit_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--audit-log", default="", metavar="PATH",
                        help="write an audit.k8s.io/v1 Event per request to PATH (JSON lines)")
    parser.add_argument("--audit-level", choices=audit.LEVELS, default="Metadata",
                        help="Metadata: who did what, when, with what outcome; Request: also "
                             "the bodies of writes (secrets redacted)")
    parser.add_argument("--audit-log-maxsize", type=float, default=100.0, metavar="MB",
                        help="rotate the audit log before it grows past this many megabytes "
                             "(default %(default)s, 0: never)")
    parser.add_argument("--audit-log-maxbackup", type=int, default=10, metavar="N",
                        help="rotated audit logs kept (default %(default)s, 0: all)")


def _audit_log(args: argparse.Namespace) -> audit.AuditLog | None:
    if not args.audit_log:
        return None
    return audit.AuditLog(Path(args.audit_log), args.audit_level, args.audit_log_maxsize,
                          args.audit_log_maxbackup)


def _console_key(pki: Pki) -> bytes:
    """What seals the console's OIDC sign-in cookie: derived from the CA key, so every server
    sharing the PKI directory finishes a sign-in another one started."""
    return hmac.new(pki.ca_key.read_bytes(), b"evroc-compute console sign-in",
                    hashlib.sha256).digest()


def _oidc(args: argparse.Namespace) -> tuple[OidcAuthenticator, ...]:
    """The OIDC issuer whose ID tokens are accepted, if --oidc-issuer-url names one."""
    if not args.oidc_issuer_url:
        return ()
    config = OidcConfig(args.oidc_issuer_url, args.oidc_client_id, args.oidc_username_claim,
                        args.oidc_groups_claim, args.oidc_username_prefix,
                        args.oidc_groups_prefix, args.oidc_ca_file,
                        _client_secret(args.oidc_client_secret_file))
    if config.problems():
        sys.exit(f"evroc-compute: {'; '.join(config.problems())}")
    return (OidcAuthenticator(config),)


def _tls(args: argparse.Namespace, pki: Pki) -> dict[str, Any]:
    """uvicorn's TLS settings: the operator's certificate or the PKI's (made on first start);
    client certificates are asked for, verified against the client CA, and optional."""
    if args.insecure_http:
        if not _loopback(args.host):
            sys.exit(f"evroc-compute: --insecure-http serves plain HTTP, which is refused on a "
                     f"non-loopback address ({args.host}): credentials would cross the network "
                     "in clear")
        log.warning("serving plain HTTP (--insecure-http): clients still authenticate")
        return {}
    if bool(args.tls_cert) != bool(args.tls_key):
        sys.exit("evroc-compute: --tls-cert and --tls-key go together")
    return {"ssl_certfile": args.tls_cert or str(pki.serving_cert),
            "ssl_keyfile": args.tls_key or str(pki.serving_key),
            "ssl_ca_certs": str(pki.client_ca_cert), "ssl_cert_reqs": ssl.CERT_OPTIONAL}


def _connection_cap(requested: int) -> int:
    """`requested`, or fewer if the process cannot open that many files."""
    files = connections.raise_file_limit()
    cap = connections.connection_cap(requested, files)
    if cap < requested:
        log.warning("at most %d connections: the open file limit is %d (raise it with ulimit -n)",
                    cap, files)
    return cap


def _console_address(text: str) -> tuple[str, int]:
    """HOST:PORT (or [IPv6]:PORT) for --console-address."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (port 0: any free port)")
    return host.strip("[]"), int(port)


def _console_tls(args: argparse.Namespace, ca: str, host: str) -> tuple[ssl.SSLContext, str]:
    """The console endpoint's TLS: its self-signed certificate for `host` (kept in
    DATA_DIR/pki, remade when it does not cover `host`), and the CA its callers' client
    certificates must be signed by. Returns the context and the certificate (PEM)."""
    from evroc_compute.server.auth.pki import ensure_self_signed

    if args.console_client_ca:
        ca = Path(args.console_client_ca).read_text()
    if not ca:
        sys.exit("evroc-compute: the kubeconfig names no CA, so the API server's client "
                 "certificate cannot be checked: pass --console-client-ca (the server's "
                 "DATA_DIR/pki/ca.crt)")
    cert, key = Path(args.data_dir) / "pki" / "agent-console.crt", \
        Path(args.data_dir) / "pki" / "agent-console.key"
    ensure_self_signed(cert, key, f"evroc-compute-agent:{args.host_name}", [host])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cadata=ca)
    context.load_cert_chain(cert, key)
    context.verify_mode = ssl.CERT_OPTIONAL  # none presented: a 401 Status, not a bare reset
    return context, cert.read_text()


async def _run_agent(args: argparse.Namespace) -> None:
    from evroc_compute.client import kubeconfig as kubeconfigs
    from evroc_compute.client.base import ClientError
    from evroc_compute.client.http import HttpClient
    from evroc_compute.hosts.agent import Agent
    from evroc_compute.hosts.console import ConsoleServer
    from evroc_compute.hosts.drivers.qemu.driver import QemuDriver, register_host
    from evroc_compute.runtime.world import World, get

    config = _qemu_host(args)
    try:
        connection = kubeconfigs.load(Path(args.kubeconfig))
    except kubeconfigs.KubeconfigError as problem:
        sys.exit(f"evroc-compute: {problem}")
    bind, port = args.console_address
    advertised = args.console_advertise_address or \
        (socket.getfqdn() if bind in ("0.0.0.0", "::", "") else bind)
    tls, certificate = _console_tls(args, connection.ca, advertised)
    async with HttpClient(args.server, f"evroc-compute-agent-{config.name}",
                          connection=connection) as client:
        server = client.base_url
        world = World(client)
        settings = _fleet(args).settings
        driver = QemuDriver(world, settings, config)

        def bound(namespace: str, name: str) -> bool:
            instance = world.instances.get(namespace, name)
            return instance is not None and get(instance, "spec", "host") == config.name

        consoles = ConsoleServer(config.name, driver.vm_dir, tls, bound)
        port = await consoles.start(bind, port)
        url = f"https://{f'[{advertised}]' if ':' in advertised else advertised}:{port}"
        agent = Agent("qemu-agent", client, world, settings, driver,
                      endpoint={"url": url, "certificate": certificate})
        try:
            await register_host(client, config)
        except ClientError as problem:
            sys.exit(f"evroc-compute: cannot register host {config.name} with {server}: "
                     f"{problem}")
        log.info("agent: host %s in %s (%s, %s networking) serving %s; consoles at %s",
                 config.name, config.zone, config.accel.upper(), config.network, server, url)
        try:
            await world.start(world.agent_informers)
            await agent.run()
        finally:
            agent.stop()
            await consoles.close()
            await world.stop()


def agent(args: argparse.Namespace) -> None:
    import asyncio

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run_agent(args))


def console(args: argparse.Namespace) -> int:
    """Print (or follow) the serial console of a VM run by this machine's agent."""
    from evroc_compute.api.consolelog import console_path

    path = console_path(Path(args.data_dir) / "qemu" / "vms", args.namespace, args.name)
    if not path.is_file():
        print(f"evroc-compute: no console log for VM {args.namespace}/{args.name} in {path.parent} "
              "(is the VM running on this host, and --data-dir the agent's?)", file=sys.stderr)
        return 1
    with path.open("rb") as log:
        while True:
            chunk = log.read(1 << 16)
            if chunk:
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
            elif not args.follow or not path.exists():
                return 0
            else:
                time.sleep(0.2)


def _host_options(parser: argparse.ArgumentParser, *, default_driver: str) -> None:
    parser.add_argument("--driver", choices=("sim", "qemu"), default=default_driver,
                        help="sim: a simulated fleet; qemu: this machine is one real host")
    parser.add_argument("--host-name", default=socket.gethostname(),
                        help="the Host name of this machine (default: its hostname)")
    parser.add_argument("--zone", default="se-sto-a", help="the zone of this machine's host")
    parser.add_argument("--image-dir", default="",
                        help="the image store (default $EVROC_IMAGE_STORE or "
                             "~/.cache/evroc-compute/images)")
    parser.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto",
                        help="auto: KVM if it works here, TCG otherwise")
    parser.add_argument("--cpu-overcommit", type=float, default=4.0,
                        help="vCPUs offered per core (default 4)")
    parser.add_argument("--memory-overcommit", type=float, default=1.0,
                        help="guest memory offered per byte of RAM (default 1)")
    parser.add_argument("--network", choices=("auto", "bridged", "user"), default="auto",
                        help="bridged: a network per project with taps, NAT, public IPs and "
                             "security groups (needs root); user: QEMU's user-mode networking; "
                             "auto: bridged when it can run here")
    parser.add_argument("--host-netns", default="",
                        help="bridged: a network namespace standing for this host's network "
                             "(uplinks, public routes, underlay), to run several hosts on one "
                             "machine (default: the machine's own)")
    parser.add_argument("--underlay-address", default="",
                        help="bridged: this host's address on the network between hosts; "
                             "project subnets span hosts over VXLAN from it (default: none)")
    parser.add_argument("--cloud-init-source", choices=("seed", "metadata"), default="seed",
                        help="seed: each guest boots with a NoCloud seed ISO; metadata "
                             "(bridged only): no seed, cloud-init reads the project network's "
                             "DHCP and metadata service as OpenStack's (default: seed)")
    parser.add_argument("--stop-timeout", type=float, default=30.0,
                        help="seconds a guest gets to power off before QEMU quits it")


def _pki_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pki-dir", default="",
                        help="the CAs, serving and admin certificates (default DATA_DIR/pki); "
                             "servers of one database share one")


def _client_secret(path: str) -> str:
    if not path:
        return ""
    try:
        return Path(path).read_text().strip()
    except OSError as problem:
        sys.exit(f"evroc-compute: --oidc-client-secret-file: {problem}")


def _oidc_options(parser: argparse.ArgumentParser) -> None:
    """kube-apiserver's --oidc-* flags, with its meanings."""
    parser.add_argument("--oidc-issuer-url", default="",
                        help="accept ID tokens of this OpenID Connect issuer (https://...; its "
                             "keys come from its discovery document)")
    parser.add_argument("--oidc-client-id", default="",
                        help="the client id ID tokens must be issued for (their aud)")
    parser.add_argument("--oidc-username-claim", default="sub",
                        help="the claim that is the user name (default %(default)s)")
    parser.add_argument("--oidc-username-prefix", default="",
                        help="prefixed to user names (default ISSUER# unless the claim is "
                             "email; '-' for none)")
    parser.add_argument("--oidc-groups-claim", default="",
                        help="the claim that lists the user's groups")
    parser.add_argument("--oidc-groups-prefix", default="", help="prefixed to group names")
    parser.add_argument("--oidc-ca-file", default="",
                        help="the CA of the issuer's certificate (default: the system's)")
    parser.add_argument("--oidc-client-secret-file", default="", metavar="PATH",
                        help="the client secret the web console's sign-in presents to the "
                             "issuer's token endpoint (default: none, a public client with PKCE)")
    parser.add_argument("--oidc-console-scopes", default=DEFAULT_SCOPES,
                        help="the scopes the web console's sign-in asks for (default "
                             "%(default)r)")


def _log_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level", choices=logs.LEVELS, default="info",
                        help="debug adds one line per request (method, path, code, duration, "
                             "user agent)")
    parser.add_argument("--log-format", choices=logs.FORMATS, default="text",
                        help="json: one JSON object per line (time, level, logger, message, "
                             "extra fields)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="evroc-compute", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="run the API server")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=6443)
    run.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR),
                     help="where the embedded SQLite store lives (default ./data)")
    run.add_argument("--store", default=os.environ.get("EVROC_STORE", ""),
                     help="where the objects live: sqlite:///PATH (default: store.db in the data "
                          "dir) or postgresql://USER@HOST:PORT/DB, shared by several servers "
                          "(default $EVROC_STORE)")
    run.add_argument("--compact-interval", type=float, default=300.0,
                     help="seconds between store compactions")
    run.add_argument("--compact-keep", type=int, default=1000,
                     help="revisions of history kept by compaction")
    run.add_argument("--event-ttl", type=duration, default="1h",
                     help="how long an event is kept after it last happened, e.g. 1h, 30m, 90s")
    run.add_argument("--fleet", default="",
                     help="a YAML fleet file (hosts, timing, faults' back-off); default: the "
                          "built-in simulated fleet of three zones with realistic timing")
    run.add_argument("--controllers", choices=("in-process", "process", "none"),
                     default="in-process",
                     help="where the control plane (controllers, scheduler, the simulated "
                          "fleet's agent) runs: in-process: in this process; process: in a "
                          "child process (`evroc-compute controllers`) over HTTPS, on another "
                          "core, restarted when it dies; none: the API only (default "
                          "%(default)s)")
    run.add_argument("--no-controllers", action="store_true",
                     help="the same as --controllers none")
    run.add_argument("--max-connections", type=int, default=connections.DEFAULT_MAX_CONNECTIONS,
                     help="open connections at most (default %(default)s, fewer if the file "
                          "limit is lower); watches may hold half of them")
    run.add_argument("--idle-timeout", type=int, default=60,
                     help="seconds a connection may take to send a request head, or a request "
                          "body, before it is closed (default %(default)s); open watches are "
                          "not affected")
    _host_options(run, default_driver="sim")
    _log_options(run)
    _pki_option(run)
    run.add_argument("--tls-cert", default="",
                     help="the serving certificate (PEM, chain included) instead of the one "
                          "made in the PKI directory")
    run.add_argument("--tls-key", default="", help="the key of --tls-cert (PEM)")
    run.add_argument("--insecure-http", action="store_true",
                     help="serve plain HTTP instead of HTTPS (loopback addresses only); "
                          "requests still need credentials")
    _oidc_options(run)
    run.add_argument("--access-log", action="store_true",
                     help="uvicorn's access log (info); --log-level debug logs each request "
                          "with its duration instead")
    _fairness_options(run)
    _audit_options(run)
    config = commands.add_parser("kubeconfig",
                                 help="print the admin's kubeconfig for the server of a data dir")
    config.add_argument("--server", default="https://127.0.0.1:6443")
    config.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR),
                        help="the server's data directory, where its PKI is (default ./data)")
    _pki_option(config)
    config.add_argument("--cluster", default="",
                        help="serve through evroc's kcp-style prefix, e.g. root:my-org")
    config.add_argument("--certificate-authority", default="",
                        help="the CA to trust instead of the PKI's (a server run with --tls-cert: "
                             "the CA of that certificate)")
    plane = commands.add_parser(
        "controllers", help="run the control plane (controllers, scheduler, the simulated "
        "fleet's agent) of a server in this process, over HTTPS")
    plane.add_argument("--kubeconfig", default="",
                       help="the server, its CA and the controller manager's credential; a "
                            "second context (--simulator-context) holds the fleet simulator's "
                            "(serve writes DATA_DIR/pki/controllers.kubeconfig)")
    plane.add_argument("--server", default="",
                       help="the API server's URL instead of the kubeconfig's, or several "
                            "servers of one database: URL1,URL2 (fails over between them)")
    plane.add_argument("--simulator-context", default="fleet-simulator",
                       help="the kubeconfig context of the simulated fleet's agent "
                            "(default %(default)s)")
    plane.add_argument("--fleet", default="",
                       help="the server's fleet file (default: the built-in simulated fleet)")
    plane.add_argument("--identity", default="",
                       help="the candidate's name in the leader election (default: host, pid)")
    plane.add_argument("--channels", default="", metavar="FD,FD",
                       help="instead of --kubeconfig: the sockets to the server it inherits, as "
                            "the controller manager and as the fleet simulator (serve "
                            "--controllers process passes them)")
    _log_options(plane)
    host_agent = commands.add_parser("agent", help="run this machine as a host of a server")
    host_agent.add_argument("--kubeconfig", required=True,
                            help="the host's kubeconfig (evroc-compute credentials create --host "
                                 "NAME prints one): the server, its CA and the host's credential")
    host_agent.add_argument("--server", default="",
                            help="the API server's URL instead of the kubeconfig's, or several "
                                 "servers of one database: URL1,URL2 (the agent fails over "
                                 "between them)")
    host_agent.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR),
                            help="where the agent keeps VM files and disks (default ./data)")
    host_agent.add_argument("--fleet", default="",
                            help="the server's fleet file, for its heartbeat, back-off and subnets")
    host_agent.add_argument("--console-address", type=_console_address, default="127.0.0.1:0",
                            metavar="HOST:PORT",
                            help="where the agent serves its VMs' serial consoles to the API "
                                 "server over HTTPS (default %(default)s: loopback, a free "
                                 "port; the address is published in the Host's status)")
    host_agent.add_argument("--console-advertise-address", default="", metavar="HOST",
                            help="the address the API server reaches the console endpoint at "
                                 "(default: --console-address's host, or this machine's name "
                                 "when that is 0.0.0.0 or ::)")
    host_agent.add_argument("--console-client-ca", default="", metavar="PATH",
                            help="the CA of the API server's client certificate for agents "
                                 "(default: the kubeconfig's CA, the server's DATA_DIR/pki/"
                                 "ca.crt)")
    _host_options(host_agent, default_driver="qemu")
    _log_options(host_agent)
    images_cli.add_parser(commands)
    store_cli.add_parser(commands, DEFAULT_DATA_DIR)
    credentials_cli.add_parser(commands, DEFAULT_DATA_DIR, duration)
    show = commands.add_parser("console", help="print the serial console of a VM on this host")
    show.add_argument("name")
    show.add_argument("-n", "--namespace", default="default")
    show.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR),
                      help="the data directory of the server or agent running the VM")
    show.add_argument("-f", "--follow", action="store_true", help="keep printing new output")
    args = parser.parse_args(argv)
    logs.configure(getattr(args, "log_level", "info"), getattr(args, "log_format", "text"))
    if args.command == "serve":
        serve(args)
    elif args.command == "controllers":
        controllers(args)
    elif args.command == "agent":
        if args.driver != "qemu":
            sys.exit("evroc-compute: a separate agent runs real VMs: --driver qemu")
        agent(args)
    elif args.command == "store":
        sys.exit(store_cli.run(args))
    elif args.command == "credentials":
        sys.exit(credentials_cli.run(args))
    elif args.command == "images":
        sys.exit(images_cli.run(args))
    elif args.command == "console":
        sys.exit(console(args))
    else:
        pki = _pki(args)
        if not pki.admin_cert.exists():
            sys.exit(f"evroc-compute: no admin credential in {pki.directory}: start the server "
                     "once with this --data-dir (it creates its certificates on first start)")
        ca = Path(args.certificate_authority) if args.certificate_authority else pki.ca_cert
        print(admin_kubeconfig(ca, pki.admin_cert, pki.admin_key, args.server, args.cluster,
                               token=pki.admin_token.read_text()
                               if pki.admin_token.exists() else ""), end="")


if __name__ == "__main__":
    main()
