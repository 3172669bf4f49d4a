"""Command line: flags, one-line errors, then hand over to the daemon."""

import argparse
import logging
import os
import signal
import sys

from . import __version__, config as config_mod
from .logs import escape_controls

EXAMPLES = """examples:
  errnomon --config.file=/etc/errnomon/config.yaml
  errnomon --web.listen-address=127.0.0.1:9779 --log.level=debug
  errnomon --web.config.file=/etc/errnomon/web.yml     # TLS, client certificates, basic auth
  errnomon --config.check --config.file=config.example.yaml
  curl -s localhost:9779/metrics | grep errnomon_socket_errors_total
  errnomon top [--url http://127.0.0.1:9779/metrics] [--interval 1]   # live view of a running errnomon
  errnomon errors [-f] [--json] [--comm nginx] [--errno ECONNRESET]    # its latest errors and their causes

Needs root (or CAP_BPF, CAP_PERFMON and CAP_DAC_READ_SEARCH), bcc (python3-bpfcc) and kernel headers: 'make setup' installs them.
SIGHUP reloads the config (read in the background; a bad file is logged and the running config and
every count are kept); SIGTERM or SIGINT stop and detach the programs. Both are honoured during start-up.
Misuse and bad configs are one line on stderr and exit status 2.
"""


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line, like every other errnomon failure."""

    def error(self, message):
        self.exit(2, "errnomon: error: %s: see '%s --help'\n" % (escape_controls(message), self.prog))


def build_parser():
    p = ArgumentParser(
        prog="errnomon", epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Count the socket errors applications see (ECONNRESET, EPIPE, ETIMEDOUT, ECONNREFUSED, ...) "
                    "per process, peer and service port from eBPF tracepoints, and serve them to Prometheus.")
    p.add_argument("--config.file", dest="config_file", default="/etc/errnomon/config.yaml",
                   help="YAML config file (default: %(default)s)")
    p.add_argument("--config.check", dest="config_check", action="store_true",
                   help="validate the config file (and the web config file, if given) and exit")
    p.add_argument("--web.listen-address", dest="listen_address", default=":9779",
                   help="address to serve metrics on (default: %(default)s, every interface: anyone who can "
                        "reach the host can read the metrics; use 127.0.0.1:9779, or --web.config.file)")
    p.add_argument("--web.config.file", dest="web_config_file", default="",
                   help="exporter-toolkit web config file: TLS, client certificates, basic auth (bcrypt), "
                        "headers, rate limit; re-read when it or its files change (default: none, plain HTTP)")
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
    print("errnomon: error: " + escape_controls(message), file=sys.stderr)
    return 2


def check_bpf_dir():
    """None, or what is wrong with ERRNOMON_BPF_DIR (the installed copy of bpf/) and what to do."""
    path = os.environ.get("ERRNOMON_BPF_DIR")
    if path is None:
        return None
    for name in ("errnomon.h", "errnomon.bpf.c"):
        if not os.path.isfile(os.path.join(path, name)):
            return ("ERRNOMON_BPF_DIR=%s has no %s: point it at errnomon's bpf/ directory (scripts/install.sh "
                    "copies it) or unset it" % (path, name))
    return None


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["top"]:  # the live view: any user, no bcc; 'errnomon top --help' for its flags
        from . import top
        return top.main(argv[1:])
    if argv[:1] == ["errors"]:  # the latest error events (GET /errors): any user, no bcc
        from . import errorlog
        # 'errnomon errors | head' ends quietly, like other tools. Set here, in the process's own entry, never in
        # errorlog.main: whatever calls that in-process (a test runner, a server thread) must keep Python's SIG_IGN.
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        return errorlog.main(argv[1:])
    args = build_parser().parse_args(argv)
    from . import web
    problem = web.check_telemetry_path(args.telemetry_path)
    if problem:
        return fail(problem)
    try:
        config = config_mod.load(args.config_file)
        web_config = None
        if args.web_config_file:
            from . import webconfig
            web_config = webconfig.load(args.web_config_file)
    except config_mod.ConfigError as e:
        return fail(str(e))
    if args.config_check:
        print("errnomon: config %s is valid" % args.config_file)
        if web_config is not None:
            print("errnomon: web config %s is valid: %s" % (args.web_config_file, web_config.describe()))
        return 0
    problem = check_bpf_dir()
    if problem:
        return fail(problem)

    try:
        from . import loader, logs, seed
    except OSError as e:  # the BPF header the ABI is read from is missing: a broken checkout or install
        return fail("cannot read errnomon's BPF sources (%s): reinstall errnomon or set ERRNOMON_BPF_DIR to "
                    "its bpf/ directory" % e)
    logs.setup(args.log_level, args.log_format)
    if args.ebpf:
        try:
            flags = loader.load(loader.preflight(), config.map_size, seed.table_sizes(
                                    config.max_sockets, seed.tcp_sockets_allocated()),
                                config.syscall_tracepoints, print_only=True, function_hooks=config.function_hooks)
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
    daemon = Daemon(config, args.config_file, args.listen_address, args.telemetry_path, web_config)
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
