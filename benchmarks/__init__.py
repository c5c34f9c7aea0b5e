"""Kraken against Redis pub/sub, side by side: ``python -m benchmarks --help``.

``servers`` starts and measures the two servers, ``wire`` is the load
generator's raw connections, ``workloads`` the workloads and their checks,
``report`` the figures and the table, ``run`` the command line.
"""
