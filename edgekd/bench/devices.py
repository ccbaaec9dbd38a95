"""Where `edgekd bench` measures: this machine without an agent, or a device through its agent.

- `inprocess`: no agent; this process calls `run_isolated` itself (still one fresh runner child
  per model, so peak memory stays attributable). Useful to compare against the agent path.
- `local`: an agent subprocess on this machine reached over a real transport (the agent client
  starts it), i.e. exactly the code path a remote device takes.
- anything else (`tcp://host:port`, `serial:///dev/ttyACM0?baud=921600`, a device path): the agent
  on that device, through `edgekd.agent.client.AgentClient`.

Every device answers the same four questions: its fingerprint, the runtimes it has, and bench /
eval of one artifact. Uploads are content-addressed on the agent, so sending an artifact or the
evaluation set twice costs one hash check.
"""
from __future__ import annotations

import logging
import platform
import time
from pathlib import Path
from typing import Any, Callable, Protocol

from edgekd.errors import AgentError, EdgeKDError

log = logging.getLogger(__name__)


# a measurement (load + warm-up + timed loop, or a whole evaluation set) may keep the agent busy
# far longer than one ordinary request; the child process has its own cap (timeout_s)
MEASURE_TIMEOUT_S = 900.0


class Device(Protocol):
    url: str

    def fingerprint(self) -> dict[str, Any]: ...

    def runtimes(self) -> dict[str, str | None]: ...

    def bench(self, artifact_dir: Path, request: dict[str, Any]) -> dict[str, Any]: ...

    def bench_many(self, artifact_dirs: list[Path], request: dict[str, Any]) -> list[dict[str, Any] | EdgeKDError]:
        """Latency of each artifact, measured one after another in one runner process (no per-model
        memory; `edgekd.bench.measure.run_isolated_many`): a result or the error it failed with, in order."""
        ...

    def eval(self, artifact_dir: Path, data_path: Path, request: dict[str, Any]) -> dict[str, Any]: ...

    def close(self) -> None: ...


def local_runtimes() -> dict[str, str | None]:
    """{runtime name: None} for every registered runtime whose package imports on this machine."""
    from edgekd.runtimes import RUNTIMES

    out: dict[str, str | None] = {}
    for name in RUNTIMES.names():
        adapter = RUNTIMES.get(name)
        if adapter.unavailable_reason() is None:
            out[name] = None
    return out


def local_fingerprint() -> dict[str, Any]:
    """This machine's fingerprint, as the agent's hello would report it."""
    try:
        from edgekd.agent.fingerprint import device_fingerprint  # the agent owns the full version
    except ImportError:
        device_fingerprint = None
    if device_fingerprint is not None:
        return dict(device_fingerprint())
    import os

    return {"arch": platform.machine(), "cpu_model": _cpu_model(), "cores": os.cpu_count(),
            "os": f"{platform.system()} {platform.release()}", "python": platform.python_version()}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown cpu"


class InProcessDevice:
    """This machine, no agent: `run_isolated` called directly."""

    url = "inprocess"

    def fingerprint(self) -> dict[str, Any]:
        return local_fingerprint()

    def runtimes(self) -> dict[str, str | None]:
        return local_runtimes()

    def bench(self, artifact_dir: Path, request: dict[str, Any]) -> dict[str, Any]:
        from edgekd.bench.measure import run_isolated

        return run_isolated(artifact_dir, request)

    def bench_many(self, artifact_dirs: list[Path], request: dict[str, Any]) -> list[dict[str, Any] | EdgeKDError]:
        from edgekd.bench.measure import run_isolated_many

        return run_isolated_many(artifact_dirs, request)

    def eval(self, artifact_dir: Path, data_path: Path, request: dict[str, Any]) -> dict[str, Any]:
        from edgekd.bench.measure import run_isolated

        return run_isolated(artifact_dir, {**request, "data": str(data_path), "latency": False, "accuracy": True})

    def close(self) -> None:
        pass


class AgentDevice:
    """A device behind an agent (`local` starts one here). Artifacts and data are uploaded once."""

    def __init__(self, url: str, key: str | None = None) -> None:
        from edgekd.agent.client import AgentClient

        self.url, self._key = url, key
        self.client = AgentClient.connect(url, key=key)
        self._hello = self.client.hello()
        self._uploaded: dict[str, str] = {}
        self._last_used = time.monotonic()
        self._many = True  # the agent takes `bench_many` (False once it answered unknown_command)

    def fingerprint(self) -> dict[str, Any]:
        hello = self._hello
        fp = hello.get("device") or hello.get("fingerprint") or {}
        return dict(fp)

    def runtimes(self) -> dict[str, str | None]:
        found = self._hello.get("runtimes")
        if found is None:
            found = self.fingerprint().get("runtimes") or {}
        if isinstance(found, dict):
            # an entry may be a version string, or {"version": ..., "available": bool}
            out = {}
            for name, v in found.items():
                if isinstance(v, dict):
                    if v.get("available", True):
                        out[name] = v.get("version")
                elif v is not False:
                    out[name] = v if isinstance(v, str) else None
            return out
        return {str(name): None for name in found}

    def _artifact_id(self, artifact_dir: Path) -> str:
        key = str(Path(artifact_dir).resolve())
        if key not in self._uploaded:
            self._uploaded[key] = self.client.put_artifact(artifact_dir)
        return self._uploaded[key]

    def _reconnect(self, why: str) -> None:
        from edgekd.agent.client import AgentClient

        log.info("reconnecting to %s: %s", self.url, why)
        self.client.close(say_bye=False)
        self.client = AgentClient.connect(self.url, key=self._key)
        self._hello = self.client.hello()
        self._uploaded.clear()  # a `local` reconnect is a new agent with an empty store; uploads are cheap to redo

    def _call(self, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Run one device call. Host work between calls (distilling) can outlast the agent's idle limit,
        after which it closes the session: reconnect first when the link has been idle that long, and
        once more if the agent closed it anyway (never on an authentication failure)."""
        from edgekd.agent.frame_auth import FrameRejected
        from edgekd.agent.protocol import LinkLost

        idle_s = float((self._hello.get("limits") or {}).get("idle_s") or 0)
        if idle_s and time.monotonic() - self._last_used > 0.8 * idle_s:
            self._reconnect(f"the link was idle longer than 80 % of the agent's idle limit ({idle_s:g} s)")
        try:
            return fn()
        except FrameRejected:
            raise
        except LinkLost as err:
            self._reconnect(f"the agent closed the link ({err})")
            return fn()
        finally:
            self._last_used = time.monotonic()

    def bench(self, artifact_dir: Path, request: dict[str, Any]) -> dict[str, Any]:
        return self._call(lambda: self.client.bench(self._artifact_id(artifact_dir), request, timeout=MEASURE_TIMEOUT_S))

    def bench_many(self, artifact_dirs: list[Path], request: dict[str, Any]) -> list[dict[str, Any] | EdgeKDError]:
        from edgekd.agent.protocol import AgentRequestError, ErrorCode

        if not self._many:  # an agent before `bench_many`: one bench per artifact, each its own process
            return [self._bench_or_error(d, request) for d in artifact_dirs]
        try:
            return self._call(lambda: self.client.bench_many([self._artifact_id(d) for d in artifact_dirs], request,
                                                             timeout=MEASURE_TIMEOUT_S))
        except AgentRequestError as err:
            if err.code != ErrorCode.UNKNOWN_COMMAND.value:
                raise
            self._many = False
            return self.bench_many(artifact_dirs, request)

    def _bench_or_error(self, artifact_dir: Path, request: dict[str, Any]) -> dict[str, Any] | EdgeKDError:
        from edgekd.agent.protocol import LinkLost

        try:
            return self.bench(artifact_dir, request)
        except LinkLost:
            raise
        except EdgeKDError as err:
            return err

    def eval(self, artifact_dir: Path, data_path: Path, request: dict[str, Any]) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            key = "file:" + str(Path(data_path).resolve())
            if key not in self._uploaded:
                self._uploaded[key] = self.client.put_file(data_path)
            return self.client.eval(self._artifact_id(artifact_dir), self._uploaded[key], request, timeout=MEASURE_TIMEOUT_S)

        return self._call(run)

    def close(self) -> None:
        close = getattr(self.client, "close", None)
        if close:
            close()


def open_device(url: str, key: str | None = None) -> Device:
    """The Device for a `--device` value; AgentError with the URL when the agent cannot be reached."""
    if url == "inprocess":
        return InProcessDevice()
    try:
        return AgentDevice(url, key)
    except ImportError as err:
        raise AgentError(f"cannot reach {url}: the agent client is not available here ({err}); "
                         "use --device inprocess") from None


def fingerprint_of(url: str, key: Any = None) -> dict[str, Any]:
    """The fingerprint of the device at `url` (an agent URL, 'local' or 'inprocess'), asked once and
    the connection closed: what an export for that device needs (its ISA picks the INT8 settings)."""
    dev = open_device(url, key)
    try:
        return dev.fingerprint()
    finally:
        dev.close()


class OnAccelerator:
    """A Device whose every bench / eval request runs on one accelerator (a target's), unless the
    request names its own. Everything else is the wrapped device's."""

    def __init__(self, device: Device, accelerator: str) -> None:
        self.device, self.accelerator = device, accelerator

    def fingerprint(self) -> dict[str, Any]:
        return self.device.fingerprint()

    def runtimes(self) -> dict[str, str | None]:
        return self.device.runtimes()

    def bench(self, artifact_dir: Path, request: dict[str, Any]) -> dict[str, Any]:
        return self.device.bench(artifact_dir, {"accelerator": self.accelerator, **request})

    def bench_many(self, artifact_dirs: list[Path], request: dict[str, Any]) -> list[dict[str, Any] | EdgeKDError]:
        return self.device.bench_many(artifact_dirs, {"accelerator": self.accelerator, **request})

    def eval(self, artifact_dir: Path, data_path: Path, request: dict[str, Any]) -> dict[str, Any]:
        return self.device.eval(artifact_dir, data_path, {"accelerator": self.accelerator, **request})

    def close(self) -> None:
        self.device.close()


def on_accelerator(device: Device, accelerator: str | None) -> Device:
    """`device` measuring on `accelerator`; the device itself for None (each runtime's default, and
    requests without the field, which every agent version takes)."""
    return device if accelerator is None else OnAccelerator(device, accelerator)
