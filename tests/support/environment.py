"""Environment variables the tests start hexproxy among."""

from __future__ import annotations

# What the kubelet puts into every pod of a namespace holding a Service "hexproxy" (port
# 4000 named "http") and a Service "hexproxy-metrics" (port 9100, unnamed).
KUBERNETES_LINKS = {
    "HEXPROXY_SERVICE_HOST": "10.96.0.12",
    "HEXPROXY_SERVICE_PORT": "4000",
    "HEXPROXY_SERVICE_PORT_HTTP": "4000",
    "HEXPROXY_PORT": "tcp://10.96.0.12:4000",
    "HEXPROXY_PORT_4000_TCP": "tcp://10.96.0.12:4000",
    "HEXPROXY_PORT_4000_TCP_PROTO": "tcp",
    "HEXPROXY_PORT_4000_TCP_PORT": "4000",
    "HEXPROXY_PORT_4000_TCP_ADDR": "10.96.0.12",
    "HEXPROXY_METRICS_SERVICE_HOST": "10.96.0.13",
    "HEXPROXY_METRICS_SERVICE_PORT": "9100",
    "HEXPROXY_METRICS_PORT": "tcp://10.96.0.13:9100",
    "HEXPROXY_METRICS_PORT_9100_TCP": "tcp://10.96.0.13:9100",
    "HEXPROXY_METRICS_PORT_9100_TCP_PROTO": "tcp",
    "HEXPROXY_METRICS_PORT_9100_TCP_PORT": "9100",
    "HEXPROXY_METRICS_PORT_9100_TCP_ADDR": "10.96.0.13",
}
