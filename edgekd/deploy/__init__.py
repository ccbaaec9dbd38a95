"""From a latency budget to a verified student on the device: select candidates by predicted
latency (`select`), train/compress/export each one (`stages`), choose among the measured ones
(`choice`, `budget`, `verdict`), drive the rounds (`loop`), then report (`report`) and ship
(`bundle`).

Reads `edgekd.latency` and `edgekd.device`; called by `edgekd.api.deploy`.
"""
