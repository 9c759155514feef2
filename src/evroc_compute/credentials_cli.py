"""`evroc-compute credentials`: issue, list and revoke the credentials users and hosts log in with.

    evroc-compute credentials create NAME [--group G]... [--ttl 24h] [--cert]   a user's kubeconfig
    evroc-compute credentials create --host NAME                                a host agent's
    evroc-compute credentials list
    evroc-compute credentials revoke NAME                                       at once

Run on a server's machine: it talks to the server as the admin of the data directory's PKI
(`--server` says where the server listens), and signs client certificates with its client CA.
A token is `<credential>.<secret>`; only the secret's SHA-256 is stored, and the token is
printed once, inside the kubeconfig. A failure prints one line and exits 1.
"""

from __future__ import annotations

import argparse
import datetime
import re
import secrets
import ssl
import sys
from pathlib import Path
from typing import Any

import httpx

from evroc_compute.api.identity import CREDENTIAL
from evroc_compute.client.kubeconfig import certificate_user, kubeconfig
from evroc_compute.server.auth.authn import certificate_credential_name, token_hash
from evroc_compute.server.auth.pki import Pki, issue, serial_of
from evroc_compute.server.auth.users import HOST_PREFIX, HOSTS

COLLECTION = f"/apis/{CREDENTIAL.group}/{CREDENTIAL.version}/{CREDENTIAL.plural}"


class CredentialsError(Exception):
    pass


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser],
               default_data_dir: Path, duration: Any) -> None:
    parser = commands.add_parser("credentials", help="issue, list and revoke credentials",
                                 description=__doc__.split("\n\n")[0] if __doc__ else None)
    actions = parser.add_subparsers(dest="credentials_command", required=True, metavar="COMMAND")
    create = actions.add_parser("create", help="issue a credential; prints a kubeconfig")
    create.add_argument("name", nargs="?", default="", help="the user name")
    create.add_argument("--group", action="append", default=[], help="a group (repeatable)")
    create.add_argument("--ttl", type=duration, default=None,
                        help="how long it works, e.g. 24h or 30m (default: until revoked)")
    create.add_argument("--cert", action="store_true",
                        help="a client certificate (CN = user, O = groups) instead of a token")
    create.add_argument("--host", default="",
                        help="a host agent's credential: user system:host:HOST, group "
                             "system:hosts")
    create.add_argument("--namespace", default="default",
                        help="the kubeconfig's default namespace (project)")
    actions.add_parser("list", help="list the credentials (never their secrets)")
    revoke = actions.add_parser("revoke", help="refuse a user's (or one credential's) requests "
                                "from now on")
    revoke.add_argument("name", help="a user name or a credential name")
    for action in actions.choices.values():
        action.add_argument("--data-dir", default=str(default_data_dir),
                            help="the server's data directory (its PKI)")
        action.add_argument("--pki-dir", default="", help="the PKI directory (default "
                            "DATA_DIR/pki)")
        action.add_argument("--server", default="https://127.0.0.1:6443",
                            help="the server's URL (default %(default)s)")


def run(args: argparse.Namespace) -> int:
    pki = Pki(Path(args.pki_dir) if args.pki_dir else Path(args.data_dir) / "pki")
    try:
        if not pki.admin_cert.exists():
            raise CredentialsError(f"no admin credential in {pki.directory}: is --data-dir the "
                                   "server's?")
        with _admin(pki, args.server) as api:
            if args.credentials_command == "list":
                _print_table(_get(api, COLLECTION)["items"])
            elif args.credentials_command == "revoke":
                _revoke(api, args.name)
            else:
                user, groups = _subject(args)
                expires = _expiry(args.ttl)
                if args.cert:
                    cert, key = issue(pki.client_ca_cert, pki.client_ca_key, user, groups,
                                      (args.ttl or 365 * 86400) / 86400)
                    _post(api, _credential(certificate_credential_name(serial_of(cert)), user,
                                           groups, expires, certificateSerial=serial_of(cert),
                                           type="certificate"))
                    entry = certificate_user(cert, key)
                else:
                    name = f"{_label(user)}-{secrets.token_hex(3)}"
                    secret = secrets.token_urlsafe(32)
                    _post(api, _credential(name, user, groups, expires, type="token",
                                           tokenHash=token_hash(secret)))
                    entry = {"token": f"{name}.{secret}"}
                print(kubeconfig(args.server, entry, ca=pki.ca_cert.read_bytes(),
                                 user_name=_label(user), namespace=args.namespace), end="")
    except (CredentialsError, httpx.HTTPError) as problem:
        print(f"evroc-compute: {problem}", file=sys.stderr)
        return 1
    return 0


def _subject(args: argparse.Namespace) -> tuple[str, tuple[str, ...]]:
    if args.host:
        return HOST_PREFIX + args.host, (HOSTS, *args.group)
    if not args.name:
        raise CredentialsError("name the user: credentials create NAME (or --host NAME)")
    if args.name.startswith("system:"):
        raise CredentialsError("user names beginning with system: are reserved for the system")
    return args.name, tuple(args.group)


def _expiry(ttl: float | None) -> str:
    if ttl is None:
        return ""
    when = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=ttl)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _label(user: str) -> str:
    """A DNS label from a user name (credential names, kubeconfig user names)."""
    return re.sub(r"[^a-z0-9]+", "-", user.lower()).strip("-")[:40] or "user"


def _credential(name: str, user: str, groups: tuple[str, ...], expires: str,
                **spec: str) -> dict[str, Any]:
    body: dict[str, Any] = {"user": user, "groups": list(groups), **spec}
    if expires:
        body["expirationTimestamp"] = expires
    return {"apiVersion": CREDENTIAL.api_version, "kind": CREDENTIAL.kind,
            "metadata": {"name": name}, "spec": body}


def _revoke(api: httpx.Client, name: str) -> None:
    items = _get(api, COLLECTION)["items"]
    chosen = [c for c in items if name in (c["metadata"]["name"], c["spec"]["user"])
              and not c["spec"].get("revoked")]
    if not chosen:
        raise CredentialsError(f"no credential that is not revoked is named {name!r} or "
                               f"belongs to user {name!r}")
    for credential in chosen:
        _check(api.patch(f"{COLLECTION}/{credential['metadata']['name']}",
                         content=b'{"spec":{"revoked":true}}',
                         headers={"content-type": "application/merge-patch+json"}))
        print(f"revoked {credential['metadata']['name']} ({credential['spec']['user']})")


def _print_table(items: list[dict[str, Any]]) -> None:
    rows = [("NAME", "USER", "GROUPS", "TYPE", "EXPIRES", "REVOKED")]
    for c in items:
        spec = c["spec"]
        rows.append((c["metadata"]["name"], spec["user"], ",".join(spec.get("groups") or ()),
                     spec["type"], spec.get("expirationTimestamp", "never"),
                     str(bool(spec.get("revoked"))).lower()))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _admin(pki: Pki, server: str) -> httpx.Client:
    tls = ssl.create_default_context(cafile=str(pki.ca_cert))
    tls.load_cert_chain(pki.admin_cert, pki.admin_key)
    return httpx.Client(base_url=server, verify=tls, timeout=30, headers={"accept": "application/json"})


def _get(api: httpx.Client, path: str) -> Any:
    return _check(api.get(path)).json()


def _post(api: httpx.Client, body: dict[str, Any]) -> None:
    _check(api.post(COLLECTION, json=body))


def _check(response: httpx.Response) -> httpx.Response:
    if response.status_code >= 400:
        try:
            message = response.json().get("message", response.text)
        except ValueError:
            message = response.text
        raise CredentialsError(f"the server refused ({response.status_code}): {message}")
    return response
