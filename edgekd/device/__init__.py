"""What edgekd knows about a device: the targets it can deploy to (built-in YAML + user files), the
device's identity (the fingerprint fields that change speed), and its profile (measurements and the
latency model fitted to them, stored as YAML under a lock).

Device side: these modules import numpy + stdlib only, so the agent and the profile code run where
torch does not exist. Nothing here knows about latency models' insides or the deploy loop.
"""
