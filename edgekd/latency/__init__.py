"""Latency prediction from measurements: a student's features (`features`), the explainable model
fitted on a device's measurements (`model`), the search space it ranks (`search_space`), calibration
on the device and the profile's latency section (`calibrate`), transfer of a foreign model with a few
measurements (`transfer`), the drift check (`drift`) and the Pareto plot (`plot`).

Reads device profiles (`edgekd.device`); read by `edgekd.deploy`.
"""
