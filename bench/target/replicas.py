"""Several serving replicas as one target: ``--host URL1,URL2,...`` (or one URL behind a balancer).

Replicas given one by one are addressed directly: each simulated user keeps one replica (its
connection) for the whole test, assigned in turn by the user's index among all load-generating
processes (bench.scenario.schedule.global_user_index), so U users spread over N replicas as
evenly as U allows. The records' ``target`` column names the replica that answered each request
(``host:port``), the sweep scrapes each replica's Prometheus metrics on its own, and the report
breaks latency and load down per replica. One URL behind a load balancer or Docker's DNS
round-robin is one target to us: which replica answered is then not known (``target`` holds the
URL's ``host:port``), only each replica's own Prometheus counts would tell. The report's
per-replica section (reports.replicas_section) flags an uneven spread.

Usage::

    hosts = parse_hosts("http://10.0.0.5:8501,http://10.0.0.6:8501")   # ConfigError on bad input
    host_for_user(hosts, user_index=3)                                  # 'http://10.0.0.6:8501'
    replica_name("http://10.0.0.6:8501")                                # '10.0.0.6:8501'
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from bench.errors import ConfigError


def parse_hosts(text: str | Sequence[str]) -> tuple[str, ...]:
    """The replica URLs of ``--host`` (comma-separated, or several values), without a trailing '/'."""
    items = [text] if isinstance(text, str) else list(text)
    hosts = [part.strip().rstrip("/") for item in items for part in item.split(",")]
    if not hosts or any(not h for h in hosts):
        raise ConfigError(f"--host '{','.join(items)}' has an empty URL: give URL or URL1,URL2,...")
    for host in hosts:
        if not host.startswith(("http://", "https://")):
            raise ConfigError(f"--host '{host}' is not an http:// or https:// URL")
    if len(set(hosts)) != len(hosts):
        raise ConfigError(f"--host names a replica twice: {','.join(hosts)}")
    return tuple(hosts)


def host_for_user(hosts: Sequence[str], user_index: int) -> str:
    """The replica a user keeps: users take the replicas in turn."""
    return hosts[user_index % len(hosts)]


def replica_name(url: str) -> str:
    """``host:port`` of a replica URL: the records' ``target`` value."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.hostname}:{port}"
