"""The on-device benchmark agent and the host's client for it.

Device side: `edgekd agent --listen HOST:PORT` or `--serial DEV` (server.py, handlers.py, storage.py,
fingerprint.py). Host side: `AgentClient.connect(url)` (client.py). Both speak the framed protocol in
protocol.py over a transport chosen by URL (transports/). Everything here imports only numpy-free
stdlib code plus pyserial; torch and onnx are never imported. See docs/PROTOCOL.md.
"""
from __future__ import annotations

from edgekd.agent.protocol import PROTOCOL_VERSION, AgentRequestError, LinkLost

__all__ = ["PROTOCOL_VERSION", "AgentClient", "AgentRequestError", "LinkLost"]


def __getattr__(name: str):  # AgentClient on first use: keeps `import edgekd.agent` light
    if name == "AgentClient":
        from edgekd.agent.client import AgentClient

        return AgentClient
    raise AttributeError(name)
