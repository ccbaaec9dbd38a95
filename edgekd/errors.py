"""Errors a user can cause and fix. The CLI prints their one-line message and exits with code 2.

Every message says what went wrong *and what to do*, and names the file or value at fault.
Programming errors (bugs) are not EdgeKDError: they keep their traceback.
"""
from __future__ import annotations

EXIT_USER_ERROR = 2


class EdgeKDError(Exception):
    """Base class of every user-facing error. `str(err)` is a complete one-line message."""

    exit_code = EXIT_USER_ERROR


class ConfigError(EdgeKDError):
    """A bad option, config file, spec string or unknown registry name."""


class DataError(EdgeKDError):
    """A dataset that is missing, unreadable or inconsistent."""


class ModelError(EdgeKDError):
    """A checkpoint or model file that is missing, corrupt or of the wrong kind."""


class TrainingError(EdgeKDError):
    """Training cannot go on (for example a NaN loss)."""


class ExportError(EdgeKDError):
    """An export or conversion failed, or a runtime needed for it is missing."""


class ParityError(ExportError):
    """An exported artifact does not match the torch model within tolerance."""


class RuntimeMissingError(EdgeKDError):
    """An optional runtime (OpenVINO, LiteRT, TensorRT, ...) is not installed here."""


class AgentError(EdgeKDError):
    """The on-device agent or the link to it failed, or it refused a request."""


class ProfileError(EdgeKDError):
    """A device profile is missing, corrupt or has no data for the question asked."""
