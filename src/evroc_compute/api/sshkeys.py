"""Validation of `spec.osSettings.ssh.authorizedKeys[].value`: one sshd(8) authorized_keys line.

The API promises the value "must be a valid SSH public key according to the sshd(8) manual page".
sshd silently skips a line it cannot use, so a bad key would surface only as a VM nobody can log
into; we therefore check at admission what sshd checks at login, and say what to fix.

Accepted: `[options] keytype base64-key [comment]` where keytype is one of SUPPORTED_KEY_TYPES and
the base64 blob is well-formed SSH wire format (RFC 4253 section 6.6, PROTOCOL.u2f for sk-*) whose
embedded type matches the line. Deliberate refusals, mirroring current OpenSSH:
- RSA moduli below 1024 bits (sshd's SSH_RSA_MINIMUM_MODULUS_SIZE) or above 16384 bits;
- ssh-dss, since OpenSSH 9.8 removed DSA support;
- *-cert-v01@openssh.com certificates, which are signed statements about a key, not keys;
- lines over 16 KiB, and values holding more than one line (trailing line breaks are stripped).
Option names and quoting are checked as sshd parses them; option values (patterns, times) are not.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec, rsa

MAX_LINE_BYTES = 16 * 1024
RSA_MIN_BITS = 1024
RSA_MAX_BITS = 16384

SUPPORTED_KEY_TYPES = (
    "ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
)
_CURVES: dict[str, ec.EllipticCurve] = {
    "nistp256": ec.SECP256R1(), "nistp384": ec.SECP384R1(), "nistp521": ec.SECP521R1(),
}

# From sshd's auth-options.c; sshd matches them case-insensitively and refuses unknown ones.
_FLAG_OPTIONS = frozenset({
    "agent-forwarding", "cert-authority", "no-agent-forwarding", "no-port-forwarding", "no-pty",
    "no-touch-required", "no-user-rc", "no-x11-forwarding", "port-forwarding", "pty", "restrict",
    "touch-required", "user-rc", "verify-required", "x11-forwarding",
})
_VALUE_OPTIONS = frozenset({
    "command", "environment", "expiry-time", "from", "permitlisten", "permitopen", "principals",
    "tunnel",
})
_OPTION = re.compile(r'([A-Za-z0-9-]+)(?:="((?:\\"|[^"])*)")?')
# An options field starts with `name,` or `name="`; a key type or base64 never does.
_OPTIONS_START = re.compile(r'[A-Za-z0-9-]+(?:,|=")')
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_BLANKS = re.compile(r"[ \t]+")


class InvalidSSHKey(ValueError):
    """The value is not an authorized_keys line sshd would use; the message says why."""


@dataclass(frozen=True)
class AuthorizedKey:
    options: str | None
    key_type: str
    blob: bytes
    comment: str

    @property
    def fingerprint(self) -> str:
        """The SHA256 fingerprint exactly as `ssh-keygen -l` prints it."""
        digest = base64.b64encode(hashlib.sha256(self.blob).digest()).decode()
        return "SHA256:" + digest.rstrip("=")


def parse_authorized_key(line: str) -> AuthorizedKey:
    """Parse and validate one authorized_keys line, raising InvalidSSHKey if sshd would not use it."""
    if len(line.encode("utf-8", "surrogatepass")) > MAX_LINE_BYTES:
        raise InvalidSSHKey(f"key is longer than {MAX_LINE_BYTES} bytes")
    # A trailing newline is what `cat key.pub` gives; tolerating it spares users a puzzling error.
    text = line.strip(" \t\r\n")
    if not text:
        raise InvalidSSHKey("key is empty")
    if "\n" in text or "\r" in text:
        raise InvalidSSHKey("key must be a single line; give each key as a separate entry")
    if "\0" in text:
        raise InvalidSSHKey("key contains a NUL character")
    options, rest = _split_options(text)
    fields = _BLANKS.split(rest, maxsplit=2)
    key_type = fields[0]
    _check_key_type(key_type)
    if len(fields) < 2:
        raise InvalidSSHKey(f'missing the base64 key data after "{key_type}"')
    try:
        blob = base64.b64decode(fields[1], validate=True)
    except ValueError:
        raise InvalidSSHKey("key data is not valid base64") from None
    _check_blob(key_type, blob)
    return AuthorizedKey(options, key_type, blob, fields[2] if len(fields) > 2 else "")


def _split_options(text: str) -> tuple[str | None, str]:
    end, quoted = 0, False
    while end < len(text) and (quoted or text[end] not in " \t"):
        if quoted and text.startswith('\\"', end):
            end += 1  # sshd lets \" stand for a quote inside a quoted value
        elif text[end] == '"':
            quoted = not quoted
        end += 1
    first, rest = text[:end], text[end:].lstrip(" \t")
    second = _BLANKS.split(rest, maxsplit=1)[0]
    # Like sshd, prefer reading the line as a bare key; only then try it as options + key.
    if _BASE64.fullmatch(second) or not (
        _OPTIONS_START.match(first) or first.lower() in _FLAG_OPTIONS | _VALUE_OPTIONS
    ):
        return None, text
    if quoted:
        raise InvalidSSHKey("options: a double-quoted value is not closed")
    _check_options(first)
    if not rest:
        raise InvalidSSHKey("missing the key type and key data after the options")
    return first, rest


def _check_options(options: str) -> None:
    pos = 0
    while True:
        m = _OPTION.match(options, pos)
        if not m:
            raise InvalidSSHKey(f"options: expected an option name at {options[pos:][:20]!r}")
        name = m.group(1).lower()
        if name in _FLAG_OPTIONS and m.group(2) is not None:
            raise InvalidSSHKey(f'option "{name}" takes no value')
        if name in _VALUE_OPTIONS and m.group(2) is None:
            raise InvalidSSHKey(f'option "{name}" needs a double-quoted value: {name}="..."')
        if name not in _FLAG_OPTIONS | _VALUE_OPTIONS:
            known = ", ".join(sorted(_FLAG_OPTIONS | _VALUE_OPTIONS))
            raise InvalidSSHKey(f'unknown option "{name}"; expected one of {known}')
        pos = m.end()
        if pos == len(options):
            return
        if options[pos] != ",":
            raise InvalidSSHKey(f'options: expected "," after option "{name}"')
        pos += 1


def _check_key_type(key_type: str) -> None:
    if key_type in SUPPORTED_KEY_TYPES:
        return
    if key_type == "ssh-dss":
        raise InvalidSSHKey("DSA (ssh-dss) keys are not supported: OpenSSH 9.8 removed DSA; "
                            "use an ssh-ed25519 key")
    if key_type.endswith("-cert-v01@openssh.com"):
        raise InvalidSSHKey(f'"{key_type}" is an SSH certificate, not a public key; '
                            "give the plain public key (the .pub file, not -cert.pub)")
    if key_type.startswith("AAAA") and _BASE64.fullmatch(key_type):
        raise InvalidSSHKey("the key type (e.g. ssh-ed25519) is missing before the key data")
    shown = key_type if len(key_type) <= 40 else key_type[:40] + "..."
    raise InvalidSSHKey(f'unsupported key type "{shown}"; '
                        f"expected one of {', '.join(SUPPORTED_KEY_TYPES)}")


def _check_blob(key_type: str, blob: bytes) -> None:
    reader = _WireReader(blob)
    embedded = reader.string()
    if embedded != key_type.encode():
        shown = embedded[:40].decode("ascii", "replace")
        raise InvalidSSHKey(f'key data declares type "{shown}" but the line says "{key_type}"')
    if key_type in ("ssh-ed25519", "sk-ssh-ed25519@openssh.com"):
        # Any 32 bytes are accepted by sshd too: Ed25519 keys are not point-validated on load.
        if len(key := reader.string()) != 32:
            raise InvalidSSHKey(f"Ed25519 key is {len(key)} bytes; expected 32")
    elif key_type == "ssh-rsa":
        e, n = reader.mpint(), reader.mpint()
        if not RSA_MIN_BITS <= n.bit_length() <= RSA_MAX_BITS:
            raise InvalidSSHKey(f"RSA key is {n.bit_length()} bits; sshd accepts {RSA_MIN_BITS} "
                                f"to {RSA_MAX_BITS} (3072 or more is recommended)")
        try:
            rsa.RSAPublicNumbers(e, n).public_key()
        except ValueError as exc:
            raise InvalidSSHKey(f"RSA key is invalid: {exc}") from None
    else:
        curve = key_type.removeprefix("sk-").removeprefix("ecdsa-sha2-").split("@")[0]
        if (declared := reader.string()) != curve.encode():
            shown = declared[:40].decode("ascii", "replace")
            raise InvalidSSHKey(f'key data is for curve "{shown}" but the key type says "{curve}"')
        point = reader.string()
        if point[:1] != b"\x04":  # sshd only reads uncompressed points
            raise InvalidSSHKey("ECDSA public point is not in uncompressed form")
        try:
            ec.EllipticCurvePublicKey.from_encoded_point(_CURVES[curve], point)
        except ValueError:
            raise InvalidSSHKey(f"ECDSA public key is not a valid point on {curve}") from None
    if key_type.startswith("sk-"):
        reader.string()  # the FIDO application, e.g. "ssh:"
    if reader.remaining:
        raise InvalidSSHKey(f"key data has {reader.remaining} unexpected trailing bytes")


class _WireReader:
    """Reads SSH wire-format fields, turning any overrun into an InvalidSSHKey."""

    def __init__(self, data: bytes) -> None:
        self._data, self._pos = data, 0

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def string(self) -> bytes:
        if self.remaining < 4:
            raise InvalidSSHKey("key data is truncated")
        size = int.from_bytes(self._data[self._pos:self._pos + 4], "big")
        start = self._pos + 4
        if start + size > len(self._data):
            raise InvalidSSHKey("key data is truncated (a field runs past its end)")
        self._pos = start + size
        return self._data[start:self._pos]

    def mpint(self) -> int:
        raw = self.string()
        if raw[:1] and raw[0] & 0x80:  # two's complement: RSA parameters are never negative
            raise InvalidSSHKey("key data contains a negative integer")
        return int.from_bytes(raw, "big")
