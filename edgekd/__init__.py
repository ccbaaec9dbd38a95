"""edgekd: distill a heavy teacher into the smallest student that meets a latency budget on a real
edge device, and prove it by measuring on the device.

Importing this package is cheap and never imports torch: the on-device agent installs only the base
dependencies (numpy, pyserial, click, pyyaml, psutil) and must import `edgekd` without torch present.
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
