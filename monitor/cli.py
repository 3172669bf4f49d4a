"""Command line: flags, one-line errors, then hand over to the daemon."""

import argparse
import logging
import sys

from . import __version__, config as config_mod

EXAMPLES = """examples:
  errnomon --config.file=/etc/errnomon/config.yaml
  errnomon --web.listen-address=127.0.0.1:9779 --log.level=debug
  errnomon --config.check --config.file=config.example.yaml
  curl -s localhost:9779/metrics | grep errnomon_socket_errors_total
  errnomon top [--url http://127.0.0.1:9779/metrics] [--interval 1]   # live view of a running errnomon

Needs root (or CAP_BPF, CAP_PERFMON and CAP_DAC_READ_SEARCH), bcc (python3-bpfcc) and kernel headers: 'make setup' installs them.
SIGHUP reloads the config; SIGTERM or SIGINT stop and detach the programs.
"""


def build_parser():
    p = argparse.ArgumentParser(
        prog="errnomon", epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Count the socket errors applications see (ECONNRESET, EPIPE, ETIMEDOUT, ECONNREFUSED, ...) "
                    "per process, peer and service port from eBPF tracepoints, and serve them to Prometheus.")
    p.add_argument("--config.file", dest="config_file", default="/etc/errnomon/config.yaml",
                   help="YAML config file (default: %(default)s)")
    p.add_argument("--config.check", dest="config_check", action="store_true",
                   help="validate the config file and exit")
    p.add_argument("--web.listen-address", dest="listen_address", default=":9779",
                   help="address to serve metrics on (default: %(default)s)")
    p.add_argument("--web.telemetry-path", dest="telemetry_path", default="/metrics",
                   help="path of the metrics (default: %(default)s)")
    p.add_argument("--log.level", dest="log_level", default="info", choices=["debug", "info", "warn", "error"],
                   help="log level (default: %(default)s)")
    p.add_argument("--log.format", dest="log_format", default="logfmt", choices=["logfmt", "json"],
                   help="log format (default: %(default)s)")
    p.add_argument("--version", action="version", version="errnomon " + __version__)
    p.add_argument("--ebpf", action="store_true", help=argparse.SUPPRESS)  # print the BPF program and flags
    return p


def fail(message):
    print("errnomon: error: " + message, file=sys.stderr)
    return 2


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["top"]:  # the live view: any user, no bcc; 'errnomon top --help' for its flags
        from . import top
        return top.main(argv[1:])
    args = build_parser().parse_args(argv)
    if not args.telemetry_path.startswith("/") or args.telemetry_path == "/":
        return fail("--web.telemetry-path %r must start with / and not be / itself, e.g. /metrics"
                    % args.telemetry_path)
    try:
        config = config_mod.load(args.config_file)
    except config_mod.ConfigError as e:
        return fail(str(e))
    if args.config_check:
        print("errnomon: config %s is valid" % args.config_file)
        return 0

    from . import loader, logs, web
    logs.setup(args.log_level, args.log_format)
    if args.ebpf:
        try:
            flags = loader.load(loader.preflight(), config.map_size, config.max_sockets,
                                config.syscall_tracepoints, print_only=True)
        except loader.LoadError as e:
            return fail(str(e))
        with open(loader.SOURCE) as f:
            print("// cflags: " + " ".join(flags))
            print(f.read())
        return 0
    try:
        web.parse_listen_address(args.listen_address)
    except web.ListenError as e:
        return fail(str(e))

    from .daemon import Daemon
    daemon = Daemon(config, args.config_file, args.listen_address, args.telemetry_path)
    try:
        daemon.start()
    except (loader.LoadError, web.ListenError) as e:
        return fail(str(e))
    except KeyboardInterrupt:
        return 130
    daemon.run()
    logging.getLogger("errnomon").info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
