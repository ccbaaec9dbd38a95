"""Run Python code in a child process where `import torch` (and any other named package) fails.

Device-side code (runners, the agent, measurement) must work on a device that has no torch. The
child gets a `sitecustomize.py` on PYTHONPATH that installs a `sys.meta_path` finder raising
ImportError for the blocked top-level names, so even an indirect import inside a library fails
the same way it would on the device.

    from tests.torchless import run_torchless
    proc = run_torchless("import edgekd.runtimes; print('ok')", tmp_path)
    assert proc.returncode == 0, proc.stderr
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

DEFAULT_BLOCKED = ("torch", "torchvision", "torchao", "onnx", "onnxscript", "litert_torch", "nncf", "sklearn")

_SITECUSTOMIZE = '''\
import sys

BLOCKED = {blocked!r}


class _Blocker:
    """Refuses the blocked top-level packages, as if they were not installed."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is blocked: this process simulates a device without it")
        return None


sys.meta_path.insert(0, _Blocker())
'''


def blocker_dir(directory: Path, blocked: tuple[str, ...] = DEFAULT_BLOCKED) -> Path:
    """Write the blocking sitecustomize.py into `directory` and return it."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sitecustomize.py").write_text(_SITECUSTOMIZE.format(blocked=tuple(blocked)), encoding="utf-8")
    return directory


def torchless_env(directory: Path, blocked: tuple[str, ...] = DEFAULT_BLOCKED,
                  base: dict[str, str] | None = None) -> dict[str, str]:
    """An environment whose Python processes cannot import `blocked` (PYTHONPATH gets the blocker
    first, then the repository root so `edgekd` imports from this tree)."""
    env = dict(os.environ if base is None else base)
    root = str(Path(__file__).resolve().parent.parent)
    parts = [str(blocker_dir(directory, blocked)), root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(parts)
    return env


def run_torchless(code: str, directory: Path, *, blocked: tuple[str, ...] = DEFAULT_BLOCKED, timeout: float = 120,
                  args: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -c code [args...]` with `blocked` packages unimportable; returns the finished process."""
    return subprocess.run([sys.executable, "-c", code, *(args or [])], env=torchless_env(directory / "blocker", blocked),
                          capture_output=True, text=True, timeout=timeout)
