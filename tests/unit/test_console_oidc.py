"""The console's OIDC sign-in, its decisions: PKCE, the sealed sign-in cookie, the callback."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from evroc_compute.server import errors
from evroc_compute.server.console.oidc_login import (
    LIFETIME,
    Login,
    authorize_url,
    callback_code,
    challenge,
    issuer_name,
    seal,
    unseal,
)

KEY = b"k" * 32
LOGIN = Login("the-state", "the-nonce", "the-verifier", "https://h:1/console/oidc/callback", 1000)


def test_the_s256_challenge_is_rfc_7636s() -> None:  # its Appendix B example
    assert challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == \
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_a_new_login_is_random_and_short_lived() -> None:
    one, two = Login.new("https://x/cb", 100.0), Login.new("https://x/cb", 100.0)
    assert len({one.state, one.nonce, one.verifier, two.state, two.nonce, two.verifier}) == 6
    assert one.expires == 100 + LIFETIME and 43 <= len(one.verifier) <= 128


def test_a_sealed_login_opens_with_its_key_only() -> None:
    sealed = seal(LOGIN, KEY)
    assert unseal(sealed, KEY, 999) == LOGIN
    assert all(c.isalnum() or c in "-_." for c in sealed)  # a cookie value as it is


@pytest.mark.parametrize(("value", "key", "now", "said"), [
    ("", KEY, 0, "no sign-in in progress"),
    (seal(LOGIN, b"another key"), KEY, 0, "not made by this server"),
    ("x" + seal(LOGIN, KEY), KEY, 0, "not made by this server"),
    (seal(LOGIN, KEY).split(".")[0], KEY, 0, "not made by this server"),
    (seal(LOGIN, KEY), KEY, 1000, "took longer than 10 minutes"),
], ids=["missing", "other-key", "altered", "no-mac", "expired"])
def test_an_unusable_cookie_says_why(value: str, key: bytes, now: float, said: str) -> None:
    with pytest.raises(ValueError, match=said):
        unseal(value, key, now)


def test_the_authorize_url_asks_for_a_pkce_code() -> None:
    url = authorize_url("https://issuer/auth?tenant=a", "client", "openid email", LOGIN)
    where = urlsplit(url)
    asked = {k: v[0] for k, v in parse_qs(where.query).items()}
    assert where.path == "/auth" and asked == {
        "tenant": "a", "response_type": "code", "client_id": "client", "scope": "openid email",
        "redirect_uri": LOGIN.redirect_uri, "state": "the-state", "nonce": "the-nonce",
        "code_challenge": challenge("the-verifier"), "code_challenge_method": "S256"}


@pytest.mark.parametrize(("query", "code", "reason", "said"), [
    ({"code": "c", "state": "the-state"}, "c", "", ""),
    ({"code": "c", "state": "other"}, "", "Forbidden", "state is not the one"),
    ({"code": "c"}, "", "Forbidden", "state is not the one"),
    ({"state": "the-state"}, "", "BadRequest", "no authorization code"),
    ({"error": "access_denied", "error_description": "no", "state": "the-state"}, "",
     "Unauthorized", "refused the sign-in: access_denied: no"),
    ({"error": "login_required", "state": "other"}, "", "Unauthorized",
     "refused the sign-in: login_required"),
], ids=["ok", "other-state", "no-state", "no-code", "issuer-error", "issuer-error-first"])
def test_the_callback(query: dict[str, str], code: str, reason: str, said: str) -> None:
    if not reason:
        assert callback_code(query, LOGIN, "https://issuer") == code
        return
    with pytest.raises(errors.ApiError) as refused:
        callback_code(query, LOGIN, "https://issuer")
    assert refused.value.reason == reason and said in refused.value.message


def test_the_issuer_is_named_by_its_host() -> None:
    assert issuer_name("https://login.example.com:8443/realms/x") == "login.example.com:8443"
