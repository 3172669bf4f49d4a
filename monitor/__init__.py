"""errnomon: live errno monitor for Linux hosts, from eBPF tracepoints to Prometheus."""

__version__ = "0.1.0"
