"""``host:port`` lists, as the cluster keys and ``TF_CONFIG`` give them (no TensorFlow)."""

from __future__ import annotations

from hvdbench.errors import UsageError


def parse_host_list(text: str, key: str) -> list[str]:
    """``'a:2222,b:2222'`` -> ``['a:2222', 'b:2222']``, each checked as host:port."""
    hosts = [h.strip() for h in text.split(",") if h.strip()]
    for h in hosts:
        host, sep, port = h.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError(f"{key}: cannot read {h!r}; expected host:port, e.g. 'node1:2222'")
    return hosts
