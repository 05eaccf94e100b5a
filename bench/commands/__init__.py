"""The ``tfsbench`` sub-commands: sweep, capacity, demo, codecs, report and compare, docker.

May import every package below it and ``reports``; only ``bench.cli`` imports this package.
"""
