"""Results on disk: per-request records (requests.csv), side-cars, summaries and run directories.

May import: ``bench.errors`` only. Reports read runs through this package.
"""
