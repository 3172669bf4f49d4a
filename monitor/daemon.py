"""Wires the steps together: loader -> drain -> decode -> aggregate -> collector -> HTTP."""

import logging
import signal
import threading
import time

from prometheus_client import CollectorRegistry, ProcessCollector

from . import abi, config as config_mod, decode, loader, sdnotify, web
from .aggregate import Aggregator
from .cgroups import UnitResolver
from .collector import ErrnoCollector
from .drain import Drain

log = logging.getLogger("errnomon")
EXPIRE_EVERY = 60.0


def count_flags(config):
    flags = 0
    for name in config.count:
        flags |= abi.COUNT_FLAGS[name]
    return flags


class Daemon:
    def __init__(self, config, config_file, listen_address, telemetry_path):
        self.config = config
        self.config_file = config_file
        self.listen_address = listen_address
        self.telemetry_path = telemetry_path
        self.wake = threading.Event()
        self.stopping = False
        self.reload_requested = False

    def status(self, text):
        log.info(text)
        sdnotify.notify("STATUS=" + text)

    def start(self):
        """Everything that can fail at start-up, in order; raises LoadError, ListenError.

        Privileges and the listen address are checked before anything is logged, so that each of those
        failures is a single line."""
        tracefs = loader.preflight()
        self.registry = CollectorRegistry()
        self.httpd = web.bind(self.listen_address, self.telemetry_path, self.registry)
        self.status("loading BPF programs")
        t0 = time.monotonic()
        try:
            self.programs = loader.load(tracefs, self.config.map_size, self.config.max_sockets,
                                        self.config.syscall_tracepoints)
        except loader.LoadError:
            self.httpd.server_close()
            raise
        attached = sum(self.programs.attached.values())
        log.info("attached %d of %d tracepoints in %.2fs", attached, len(self.programs.attached),
                 time.monotonic() - t0)
        self.decoder = decode.Decoder(decode.reset_reasons(self.programs.formats.get("tcp:tcp_send_reset")))
        self.aggregator = Aggregator(self.config, unit_of=UnitResolver())
        self.drain = Drain(self.programs, count_flags(self.config))
        self.registry.register(ErrnoCollector(self.aggregator, self._status))
        ProcessCollector(registry=self.registry)
        web.start(self.httpd)
        self.status("serving metrics on %s%s" % (self.listen_address, self.telemetry_path))
        sdnotify.notify("READY=1")

    def _status(self):
        return {"attached": self.programs.attached, "drops": self.programs.drops(), "missed": self.programs.missed()}

    def drain_once(self):
        events = self.drain()
        if events:
            self.aggregator.add((self.decoder(key), n) for key, n in events)

    def reload(self):
        self.reload_requested = False
        try:
            new = config_mod.load(self.config_file)
        except config_mod.ConfigError as e:
            log.error("reload failed, keeping the running config: %s", e)
            return
        for key in config_mod.KERNEL_KEYS:
            if getattr(new, key) != getattr(self.config, key):
                log.warning("kernel.%s changed: takes effect at the next restart", key)
        self.config = new
        self.aggregator.configure(new)
        self.drain.set_count_flags(count_flags(new))
        log.info("config reloaded from %s", self.config_file)

    def _on_signal(self, signum, frame):
        if signum == signal.SIGHUP:
            self.reload_requested = True
        else:
            self.stopping = True
        self.wake.set()

    def run(self):
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        watchdog = sdnotify.watchdog_interval()
        now = time.monotonic()
        next_drain, next_ping, next_expire = now + self.config.drain_interval, now, now + EXPIRE_EVERY
        try:
            while not self.stopping:
                # the watchdog has its own deadline: a WatchdogSec shorter than the drain interval still works
                deadline = min(next_drain, next_ping) if watchdog else next_drain
                self.wake.wait(max(0.0, deadline - time.monotonic()))
                self.wake.clear()
                if self.reload_requested:
                    self.reload()
                now = time.monotonic()
                if watchdog and now >= next_ping:
                    sdnotify.notify("WATCHDOG=1")
                    next_ping = now + watchdog
                if now >= next_drain:
                    self.drain_once()
                    next_drain = now + self.config.drain_interval
                if now >= next_expire:
                    self.aggregator.expire()
                    next_expire = now + EXPIRE_EVERY
        finally:
            self.stop()

    def stop(self):
        sdnotify.notify("STOPPING=1")
        log.info("shutting down: detaching BPF programs")
        self.httpd.shutdown()
        self.programs.close()
