"""The Locust glue behind ``locustfiles/``: options, schedules, users, per-request records.

May import: ``bench.payloads``, ``bench.store``, ``bench.target`` and the shared modules. Locust and
gevent are imported lazily, only inside a Locust process.
"""
