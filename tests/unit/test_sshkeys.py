"""Tests for authorized_keys line validation, against real keys made by ssh-keygen."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from evroc_compute.api.sshkeys import InvalidSSHKey, parse_authorized_key

# name -> ssh-keygen arguments; rsa1024 is the smallest size sshd still accepts.
_GENERATED = {
    "ed25519": ["-t", "ed25519"],
    "rsa": ["-t", "rsa", "-b", "3072"],
    "rsa1024": ["-t", "rsa", "-b", "1024"],
    "ecdsa256": ["-t", "ecdsa", "-b", "256"],
    "ecdsa384": ["-t", "ecdsa", "-b", "384"],
    "ecdsa521": ["-t", "ecdsa", "-b", "521"],
}
Keys = dict[str, Path]  # name -> path of a .pub file holding one line


def _s(data: bytes | str) -> bytes:
    raw = data.encode() if isinstance(data, str) else data
    return len(raw).to_bytes(4, "big") + raw


def _mpint(n: int) -> bytes:
    return _s(n.to_bytes(n.bit_length() // 8 + 1, "big"))  # +1 keeps the sign bit clear


def _fields(keys: Keys, name: str) -> list[str]:
    return keys[name].read_text().split()


def _blob(keys: Keys, name: str) -> bytes:
    return base64.b64decode(_fields(keys, name)[1])


def _line(key_type: str, blob: bytes, comment: str = "") -> str:
    return f"{key_type} {base64.b64encode(blob).decode()} {comment}".strip()


def _wire(blob: bytes) -> list[bytes]:
    out = []
    while blob:
        size = int.from_bytes(blob[:4], "big")
        out.append(blob[4:4 + size])
        blob = blob[4 + size:]
    return out


def _sk_ed25519(keys: Keys) -> str:
    _, pub = _wire(_blob(keys, "ed25519"))
    return _line("sk-ssh-ed25519@openssh.com",
                 _s("sk-ssh-ed25519@openssh.com") + _s(pub) + _s("ssh:"), "fido")


def _sk_ecdsa(keys: Keys) -> str:
    _, curve, point = _wire(_blob(keys, "ecdsa256"))
    return _line("sk-ecdsa-sha2-nistp256@openssh.com",
                 _s("sk-ecdsa-sha2-nistp256@openssh.com") + _s(curve) + _s(point) + _s("ssh:"))


def _ed(keys: Keys) -> str:
    return " ".join(_fields(keys, "ed25519")[:2])


def _ecdsa_with(keys: Keys, edit: Callable[[bytes], bytes]) -> str:
    key_type, curve, point = _wire(_blob(keys, "ecdsa256"))
    return _line(key_type.decode(), _s(key_type) + _s(curve) + _s(edit(point)))


def _rsa(e: bytes, n: bytes) -> str:
    return _line("ssh-rsa", _s("ssh-rsa") + e + n)


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen is not installed")
    tmp = tmp_path_factory.mktemp("sshkeys")
    out = {}
    for name, args in _GENERATED.items():
        subprocess.run(["ssh-keygen", *args, "-q", "-N", "", "-C", f"user@{name}",
                        "-f", str(tmp / name)], check=True)
        out[name] = tmp / f"{name}.pub"
    for name, make in {"sk-ed25519": _sk_ed25519, "sk-ecdsa": _sk_ecdsa}.items():
        (tmp / f"{name}.pub").write_text(make(out) + "\n")
        out[name] = tmp / f"{name}.pub"
    return out


GENERATED_TYPES = [
    ("ed25519", "ssh-ed25519"),
    ("rsa", "ssh-rsa"),
    ("rsa1024", "ssh-rsa"),
    ("ecdsa256", "ecdsa-sha2-nistp256"),
    ("ecdsa384", "ecdsa-sha2-nistp384"),
    ("ecdsa521", "ecdsa-sha2-nistp521"),
    ("sk-ed25519", "sk-ssh-ed25519@openssh.com"),
    ("sk-ecdsa", "sk-ecdsa-sha2-nistp256@openssh.com"),
]


@pytest.mark.parametrize("name,key_type", GENERATED_TYPES,
                         ids=[f"accepts {name} key" for name, _ in GENERATED_TYPES])
def test_accepts_key_with_fingerprint_matching_ssh_keygen(keys: Keys, name: str,
                                                          key_type: str) -> None:
    parsed = parse_authorized_key(keys[name].read_text())
    listed = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(keys[name])],
                            check=True, capture_output=True, text=True).stdout.split()
    assert (parsed.key_type, parsed.options, parsed.fingerprint) == (key_type, None, listed[1])


VALID: list[tuple[str, Callable[[Keys], str], dict[str, str | None]]] = [
    ("comment with spaces is kept whole",
     lambda k: _ed(k) + "  Jane Doe's laptop (work)", {"comment": "Jane Doe's laptop (work)"}),
    ("missing comment is empty", _ed, {"comment": "", "options": None}),
    ("tabs separate fields", lambda k: _ed(k).replace(" ", "\t") + "\tme", {"comment": "me"}),
    ("trailing newline from cat is tolerated", lambda k: _ed(k) + " me\r\n", {"comment": "me"}),
    ("bare option before key", lambda k: "restrict " + _ed(k), {"options": "restrict"}),
    ("quoted option values may hold spaces and commas",
     lambda k: 'from="10.0.0.0/8,192.168.0.0/16",command="echo hello, world",no-pty ' + _ed(k)
     + " me", {"options": 'from="10.0.0.0/8,192.168.0.0/16",command="echo hello, world",no-pty',
               "comment": "me"}),
    ("escaped quote inside option value",
     lambda k: r'command="echo \"hi there\"",NO-PTY ' + _ed(k),
     {"options": r'command="echo \"hi there\"",NO-PTY', "key_type": "ssh-ed25519"}),
]


@pytest.mark.parametrize("case,expected", [(c[1], c[2]) for c in VALID],
                         ids=[c[0] for c in VALID])
def test_accepts(keys: Keys, case: Callable[[Keys], str], expected: dict[str, str]) -> None:
    parsed = parse_authorized_key(case(keys))
    assert {field: getattr(parsed, field) for field in expected} == expected


INVALID: list[tuple[str, Callable[[Keys], str], str]] = [
    ("empty string", lambda k: "", "key is empty"),
    ("only whitespace", lambda k: " \t\n", "key is empty"),
    ("two keys on separate lines",
     lambda k: _ed(k) + "\n" + _ed(k), "must be a single line"),
    ("longer than 16 KiB", lambda k: _ed(k) + " " + "x" * 16384, "longer than 16384 bytes"),
    ("unknown key type",
     lambda k: "ssh-foo " + _fields(k, "ed25519")[1],
     'unsupported key type "ssh-foo"; expected one of ssh-ed25519, ssh-rsa'),
    ("DSA key", lambda k: _line("ssh-dss", _s("ssh-dss") + _mpint(7) * 4), "OpenSSH 9.8 removed"),
    ("certificate instead of key",
     lambda k: _line("ssh-ed25519-cert-v01@openssh.com", _s("ssh-ed25519-cert-v01@openssh.com")),
     "is an SSH certificate, not a public key"),
    ("key data without key type", lambda k: _fields(k, "ed25519")[1], "key type (e.g. ssh-ed"),
    ("key type without key data", lambda k: "ssh-ed25519", "missing the base64 key data"),
    ("key data not base64", lambda k: "ssh-ed25519 AAAA!!!!", "not valid base64"),
    ("truncated base64", lambda k: _ed(k)[:-3], "not valid base64"),
    ("truncated key data",
     lambda k: _line("ssh-ed25519", _blob(k, "ed25519")[:-4]), "key data is truncated"),
    ("trailing bytes after key data",
     lambda k: _line("ssh-ed25519", _blob(k, "ed25519") + b"\0"), "1 unexpected trailing bytes"),
    ("type prefix differs from key data",
     lambda k: "ssh-ed25519 " + _fields(k, "rsa")[1],
     'key data declares type "ssh-rsa" but the line says "ssh-ed25519"'),
    ("ecdsa curve size differs from key data",
     lambda k: "ecdsa-sha2-nistp384 " + _fields(k, "ecdsa256")[1], 'declares type "ecdsa-sha2-n'),
    ("ecdsa curve name differs from key type",
     lambda k: _line("ecdsa-sha2-nistp256", _s("ecdsa-sha2-nistp256") + _s("nistp384") + _s(
         _wire(_blob(k, "ecdsa384"))[2])), 'key data is for curve "nistp384"'),
    ("ecdsa point off the curve",
     lambda k: _ecdsa_with(k, lambda p: p[:-1] + bytes([p[-1] ^ 1])), "not a valid point"),
    ("ecdsa compressed point",
     lambda k: _ecdsa_with(k, lambda p: bytes([2 + p[-1] % 2]) + p[1:33]), "uncompressed form"),
    ("ed25519 key of 31 bytes",
     lambda k: _line("ssh-ed25519", _s("ssh-ed25519") + _s(bytes(31))), "31 bytes; expected 32"),
    ("sk key without application",
     lambda k: _line("sk-ssh-ed25519@openssh.com",
                     _s("sk-ssh-ed25519@openssh.com") + _s(bytes(32))), "truncated"),
    ("RSA key of 512 bits", lambda k: _rsa(_mpint(65537), _mpint((1 << 511) | 1)),
     "RSA key is 512 bits; sshd accepts 1024"),
    ("RSA key of 1023 bits", lambda k: _rsa(_mpint(65537), _mpint((1 << 1022) | 1)),
     "RSA key is 1023 bits"),
    ("RSA negative modulus", lambda k: _rsa(_mpint(65537), _s(b"\xff" * 256)), "negative"),
    ("RSA even exponent", lambda k: _rsa(_mpint(65536), _mpint((1 << 2047) | 1)),
     "RSA key is invalid"),
    ("unknown option", lambda k: "bogus-opt,no-pty " + _ed(k), 'unknown option "bogus-opt"'),
    ("flag option given a value", lambda k: 'no-pty="yes" ' + _ed(k), '"no-pty" takes no value'),
    ("value option without value", lambda k: "from " + _ed(k), '"from" needs a double-quoted'),
    ("unclosed quote in options",
     lambda k: 'from="10.0.0.0/8 ' + _ed(k), "double-quoted value is not closed"),
    ("stray comma in options", lambda k: "no-pty,,restrict " + _ed(k), "expected an option name"),
    ("options without key", lambda k: "no-pty", "missing the key type and key data"),
]


@pytest.mark.parametrize("case,message", [(c[1], c[2]) for c in INVALID],
                         ids=[f"rejects {c[0]}" for c in INVALID])
def test_rejects(keys: Keys, case: Callable[[Keys], str], message: str) -> None:
    with pytest.raises(InvalidSSHKey, match=re.escape(message)):
        parse_authorized_key(case(keys))


def test_invalid_key_is_a_value_error() -> None:
    assert issubclass(InvalidSSHKey, ValueError)
