"""The project's own benchmarks (``python -m bench.perf.server``, ``python -m bench.perf.load_generator``).

They print ratios measured side by side in one run; they may import anything but the CLI.
"""
