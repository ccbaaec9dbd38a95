"""Shared-key HMAC challenge-response, run at the start of every session (docs/PROTOCOL.md).

    host  -> agent   challenge {}                         agent picks a fresh 32-byte nonce Na
    agent -> host    {nonce: Na, auth_required: bool}
    host  -> agent   auth {nonce: Nh, proof: HMAC(K, "edgekd-auth-host"  | Na | Nh)}
    agent -> host    {proof: HMAC(K, "edgekd-auth-agent" | Na | Nh)}   (the host checks it: mutual)

The key never travels; each agent nonce is good for one attempt. The key authenticates the session
start; it does not encrypt the link (run over a trusted network or an SSH tunnel when that matters).
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
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
