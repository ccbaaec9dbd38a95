"""Shared-key HMAC challenge-response, run at the start of every session (docs/PROTOCOL.md).

    host  -> agent   challenge {}                         agent picks a fresh 32-byte nonce Na
    agent -> host    {nonce: Na, auth_required: bool}
    host  -> agent   auth {nonce: Nh, proof: HMAC(K, "edgekd-auth-host"  | Na | Nh)}
    agent -> host    {proof: HMAC(K, "edgekd-auth-agent" | Na | Nh)}   (the host checks it: mutual)

The key never travels; each agent nonce is good for one attempt. After a successful `auth` both sides
derive per-direction session keys from K and both nonces (`session_keys`, HKDF-SHA256 of RFC 5869)
and every later frame carries a MAC under them (frame_auth.py). Nothing is encrypted.

Why HKDF on stdlib `hmac`/`hashlib` rather than the `cryptography` package: RFC 5869 HKDF is a dozen
lines over HMAC-SHA256 (checked against the RFC's test vectors in the tests), and the on-device
install stays light: `cryptography` is a compiled (Rust + OpenSSL) wheel that must exist for every
board's architecture and Python, or be built there, and the agent would need nothing else from it.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from edgekd.errors import ConfigError

KEY_ENV = "EDGEKD_AGENT_KEY"
MIN_KEY_BYTES = 16
NONCE_BYTES = 32
_HOST_LABEL = b"edgekd-auth-host\0"
_AGENT_LABEL = b"edgekd-auth-agent\0"


def _check(key: bytes, source: str) -> bytes:
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(
            f"agent key from {source} is {len(key)} bytes; use at least {MIN_KEY_BYTES} "
            "(e.g. `python -c \"import secrets; print(secrets.token_hex(32))\" > agent.key`)"
        )
    return key


def load_key(key: bytes | str | None = None, key_file: str | os.PathLike[str] | None = None,
             env: dict[str, str] | None = None) -> bytes | None:
    """The shared key: explicit `key`, else the contents of `key_file`, else $EDGEKD_AGENT_KEY, else None.

    Surrounding whitespace (a trailing newline in a key file) is not part of the key.
    """
    if key is not None:
        raw = key.encode("utf-8") if isinstance(key, str) else bytes(key)
        return _check(raw.strip(), "the key argument")
    if key_file is not None:
        path = Path(key_file).expanduser()
        try:
            raw = path.read_bytes()
        except OSError as err:
            raise ConfigError(f"cannot read agent key file {str(path)!r} ({err.strerror or err}); check the path") from None
        return _check(raw.strip(), f"key file {str(path)!r}")
    value = (os.environ if env is None else env).get(KEY_ENV)
    if value:
        return _check(value.strip().encode("utf-8"), f"${KEY_ENV}")
    return None


def new_nonce() -> str:
    return secrets.token_hex(NONCE_BYTES)


def _mac(key: bytes, label: bytes, agent_nonce: str, host_nonce: str) -> str:
    return hmac.new(key, label + bytes.fromhex(agent_nonce) + bytes.fromhex(host_nonce), hashlib.sha256).hexdigest()


def host_proof(key: bytes, agent_nonce: str, host_nonce: str) -> str:
    return _mac(key, _HOST_LABEL, agent_nonce, host_nonce)


def agent_proof(key: bytes, agent_nonce: str, host_nonce: str) -> str:
    return _mac(key, _AGENT_LABEL, agent_nonce, host_nonce)


def is_nonce(value: object) -> bool:
    if not isinstance(value, str) or len(value) != 2 * NONCE_BYTES:
        return False
    try:
        bytes.fromhex(value)
    except ValueError:
        return False
    return True


def verify(expected: str, given: object) -> bool:
    """Constant-time comparison of two hex proofs."""
    return isinstance(given, str) and hmac.compare_digest(expected.encode(), given.encode())


# ---- session keys for the per-frame MAC (protocol version 2) ---------------------------------------
_HOST_TO_AGENT_INFO = b"edgekd/2 frame mac host->agent"
_AGENT_TO_HOST_INFO = b"edgekd/2 frame mac agent->host"


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int = 32) -> bytes:
    """HKDF-SHA256 (RFC 5869): extract a pseudorandom key from `ikm` with `salt`, expand it for `info`."""
    if not 0 < length <= 255 * 32:
        raise ValueError(f"HKDF-SHA256 output length must be 1..{255 * 32} bytes, not {length}")
    prk = hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()
    okm, block = b"", b""
    for i in range(1, -(-length // 32) + 1):
        block = hmac.new(prk, block + info + bytes([i]), hashlib.sha256).digest()
        okm += block
    return okm[:length]


@dataclass(frozen=True)
class SessionKeys:
    """One key per direction: a frame can never be reflected back to the side that sent it."""

    host_to_agent: bytes
    agent_to_host: bytes


def session_keys(key: bytes, agent_nonce: str, host_nonce: str) -> SessionKeys:
    """The MAC keys of one session: HKDF(K, salt = Na | Nh, info = direction label).

    Both nonces are fresh per session, so two sessions under the same K never share a key (a frame
    spliced in from another session fails its MAC).
    """
    salt = bytes.fromhex(agent_nonce) + bytes.fromhex(host_nonce)
    return SessionKeys(hkdf_sha256(key, salt, _HOST_TO_AGENT_INFO), hkdf_sha256(key, salt, _AGENT_TO_HOST_INFO))
