"""The console's sign-in with an OIDC issuer over HTTP, as a browser makes it: the login
redirect, the issuer's authorize and token endpoints (a real issuer on loopback), the callback,
and every way a callback is refused."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.conftest import Server, start_server
from tests.e2e.oidc_issuer import CLIENT_ID, Issuer, running_issuer

SECRET = "s3cret/with+chars"


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Issuer]:
    with running_issuer(tmp_path_factory.mktemp("issuer")) as found:
        found.client_secret = SECRET
        yield found


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, issuer: Issuer) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("console-oidc")
    secret = base / "client-secret"
    secret.write_text(SECRET + "\n")
    srv = start_server(base / "data", *oidc_flags(issuer), "--oidc-client-secret-file",
                       str(secret))
    yield srv
    srv.stop()


def oidc_flags(issuer: Issuer) -> tuple[str, ...]:
    return ("--oidc-issuer-url", issuer.url, "--oidc-client-id", CLIENT_ID,
            "--oidc-groups-claim", "groups", "--oidc-ca-file", str(issuer.ca),
            "--oidc-username-prefix", "oidc:")


def browser(server: Server, issuer: Issuer) -> httpx.Client:
    """The browser at the server: it keeps cookies; redirects are followed by hand. (The
    issuer's CA has the same name as the server's, so each gets a client of its own.)"""
    return httpx.Client(verify=ssl.create_default_context(cafile=str(server.ca)),
                        headers={"accept": "application/json"})


def start(http: httpx.Client, server: Server) -> str:
    """GET /console/oidc/login: the issuer URL the browser is sent to."""
    reply = http.get(f"{server.url}/console/oidc/login")
    assert reply.status_code == 303, reply.text
    return reply.headers["location"]


def at_issuer(issuer: Issuer, authorize: str) -> str:
    """The issuer's authorize endpoint: the callback URL it sends the browser back to."""
    reply = httpx.get(authorize, verify=ssl.create_default_context(cafile=str(issuer.ca)))
    assert reply.status_code == 302, reply.text
    return reply.headers["location"]


def test_the_login_page_is_offered_the_issuer(server: Server, issuer: Issuer) -> None:
    with browser(server, issuer) as http:
        offered = http.get(f"{server.url}/console/oidc").json()
    assert offered == {"issuer": issuer.url, "name": issuer.url.removeprefix("https://")}


def test_a_sign_in_opens_a_session_with_the_id_token(server: Server, issuer: Issuer) -> None:
    with browser(server, issuer) as http:
        authorize = start(http, server)
        sealed = http.cookies.jar
        login_cookie = next(c for c in sealed if c.name == "evroc-oidc-login")
        assert login_cookie.path == "/console/oidc" and login_cookie.secure
        assert login_cookie.has_nonstandard_attr("HttpOnly")
        asked = {k: v[0] for k, v in parse_qs(urlsplit(authorize).query).items()}
        assert authorize.startswith(f"{issuer.url}/authorize?")
        assert asked["code_challenge_method"] == "S256" and len(asked["code_challenge"]) == 43
        assert asked["client_id"] == CLIENT_ID and "openid" in asked["scope"].split()
        assert asked["redirect_uri"] == f"{server.url}/console/oidc/callback"
        assert asked["state"] and asked["nonce"] and asked["state"] != asked["nonce"]
        callback = at_issuer(issuer, authorize)
        done = http.get(callback, headers={"accept": "text/html"})
        assert done.status_code == 200 and b"url=/console/" in done.content, done.headers.get("location")
        session = http.cookies.get("evroc-session")
        assert session and session.count(".") == 2  # the ID token itself
        assert "evroc-oidc-login" not in http.cookies  # the sign-in is over
        who = http.get(f"{server.url}/console/session").json()
    assert who["user"]["username"] == "oidc:alice"
    assert who["user"]["groups"][:2] == ["developers", "team-a"]
    assert issuer.token_refusals == []  # the PKCE verifier and client secret were right


def test_a_tampered_state_is_refused(server: Server, issuer: Issuer) -> None:
    with browser(server, issuer) as http:
        callback = at_issuer(issuer, start(http, server))
        forged = callback.replace("state=", "state=x")
        reply = http.get(forged)
        assert reply.status_code == 403 and reply.json()["reason"] == "Forbidden"
        assert "state is not the one of the sign-in this browser started" in reply.json()["message"]
        assert "evroc-session" not in http.cookies
        assert len(issuer.codes) >= 1  # the code was never traded


def test_a_browser_is_sent_to_the_login_page_with_the_refusal(server: Server,
                                                               issuer: Issuer) -> None:
    with browser(server, issuer) as http:
        callback = at_issuer(issuer, start(http, server))
        http.cookies.delete("evroc-oidc-login")  # another browser's callback
        reply = http.get(callback, headers={"accept": "text/html"})
    assert reply.status_code == 303
    where = urlsplit(reply.headers["location"])
    assert where.path == "/console/login"
    assert parse_qs(where.query)["error"][0].startswith("BadRequest: this browser has no sign-in")


def test_a_sealed_cookie_cannot_be_altered(server: Server, issuer: Issuer) -> None:
    with browser(server, issuer) as http:
        callback = at_issuer(issuer, start(http, server))
        sealed = http.cookies["evroc-oidc-login"]
        http.cookies.set("evroc-oidc-login", "A" + sealed[1:], path="/console/oidc",
                         domain=urlsplit(server.url).hostname or "")
        reply = http.get(callback)
    assert reply.status_code == 400 and "not made by this server" in reply.json()["message"]


def test_the_issuers_error_is_the_refusal(server: Server, issuer: Issuer) -> None:
    issuer.deny = ("access_denied", "the user said no")
    try:
        with browser(server, issuer) as http:
            reply = http.get(at_issuer(issuer, start(http, server)))
    finally:
        issuer.deny = None
    assert reply.status_code == 401
    assert reply.json()["message"] == (f"Unauthorized: the issuer {issuer.url} refused the "
                                       "sign-in: access_denied: the user said no")


def test_an_id_token_for_another_sign_in_is_refused(server: Server, issuer: Issuer) -> None:
    issuer.nonce = "another-sign-ins-nonce"
    try:
        with browser(server, issuer) as http:
            reply = http.get(at_issuer(issuer, start(http, server)))
            assert "evroc-session" not in http.cookies
    finally:
        issuer.nonce = None
    assert reply.status_code == 401
    assert "nonce is not the one this sign-in sent" in reply.json()["message"]


def test_a_code_is_traded_once(server: Server, issuer: Issuer) -> None:
    with browser(server, issuer) as http:
        authorize = start(http, server)
        callback = at_issuer(issuer, authorize)
        assert http.get(callback).status_code == 200
        http.cookies.clear()
        start(http, server)  # a new sign-in cookie, the old callback replayed with its state
        replayed = http.get(callback)
    assert replayed.status_code == 403  # the new sign-in has another state


def test_a_wrong_client_secret_is_refused_by_the_issuer(tmp_path: Path, issuer: Issuer) -> None:
    wrong = tmp_path / "secret"
    wrong.write_text("not-it")
    srv = start_server(tmp_path / "data", *oidc_flags(issuer), "--oidc-client-secret-file",
                       str(wrong))
    try:
        with browser(srv, issuer) as http:
            reply = http.get(at_issuer(issuer, start(http, srv)))
    finally:
        srv.stop()
    assert reply.status_code == 401
    assert "refused the authorization code: invalid_grant: bad client credentials" in \
        reply.json()["message"]
