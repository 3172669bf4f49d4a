"""Wires the steps together: loader -> drain -> decode -> aggregate -> collector -> HTTP."""

import ctypes
import logging
import math
import os
import select
import signal
import threading
import time

from prometheus_client import CollectorRegistry, ProcessCollector

from . import abi, bpfmap, config as config_mod, decode, events, loader, sdnotify, seed, web, webconfig
from .aggregate import Aggregator
from .cgroups import UnitResolver
from .collector import ErrnoCollector
from .drain import Drain
from .listen_queue import KernelListeners, ListenQueues
from .pods import PodResolver

log = logging.getLogger("errnomon")
EXPIRE_EVERY = 60.0
EVENTS_EVERY = 1.0  # seconds: error events reach /errors at most this late while errors are being counted
# Listeners followed in the kernel have their drops counted at their close and at each poll (monitor/listen_queue.py);
# on the fallback rung a poll only delays a count, but the drops after a listener's last poll are lost with it.
LISTEN_POLL_EVERY = 5.0
# A drain this large (a burst, or a loop that fell behind) leaves megabytes of freed memory that malloc keeps
# for reuse, so the resident size would follow the largest burst ever seen: hand it back to the kernel.
TRIM_AFTER = 4096


# glibc gives each thread that allocates its own malloc arena (up to 8 per core): a scrape's transient memory,
# built in whichever HTTP worker runs it, then stayed resident once per worker. Two arenas held the RssAnon of
# a 60,000-series daemon flat at 59 MiB over repeated scrapes, where the default climbed past 74 MiB
# (docs/BENCHMARKS.md, Memory).
M_ARENA_MAX = -8
MALLOC_ARENAS = 2


def _glibc(name):
    try:
        return getattr(ctypes.CDLL(None), name)  # glibc
    except (OSError, AttributeError):
        return None


_TRIM = _glibc("malloc_trim")
_MALLOPT = _glibc("mallopt")


def limit_malloc_arenas(arenas=MALLOC_ARENAS):
    """Cap glibc's malloc arenas (before the threads start); a no-op elsewhere."""
    if _MALLOPT is not None:
        _MALLOPT(M_ARENA_MAX, arenas)


def trim_heap():
    """Return free heap pages to the kernel (glibc malloc_trim); a no-op elsewhere. About a millisecond."""
    if _TRIM is not None:
        _TRIM(0)


def socket_tables(max_sockets):
    """(owner table entries, seeded table entries) for kernel.max_sockets (0: auto, logged)."""
    sockets = seed.tcp_sockets_allocated()
    owners, seeded = seed.table_sizes(max_sockets, sockets)
    if not max_sockets:
        log.info("kernel.max_sockets auto: %d (%s TCP sockets on the host at start)", owners,
                 "unknown" if sockets is None else sockets)
    if max_sockets and sockets and sockets > max_sockets:
        log.warning("%d TCP sockets on the host but kernel.max_sockets is %d: owners will be evicted; raise it, "
                    "or set it to auto", sockets, max_sockets)
    return owners, seeded


def event_interval_ns(config):
    """events.rate as the programs take it: nanoseconds between events; 0 when events are off."""
    return 1_000_000_000 // config.events_rate if config.events_enabled else 0


def count_flags(config):
    flags = 0
    for name in config.count:
        flags |= abi.COUNT_FLAGS[name]
    return flags


class Signals:
    """SIGTERM, SIGINT and SIGHUP, recorded and nothing else.

    A handler runs between two bytecodes of whatever the main thread was doing, so it must not take a
    lock (threading.Event.set() does: a burst of signals deadlocked on it). The handler only sets a flag;
    the C-level handler also writes a byte to the wakeup pipe (signal.set_wakeup_fd), which the main loop
    waits on with select(), so a signal wakes the loop at once. Installed before start-up: a signal during
    the BPF compile is acted on as soon as the loop runs."""

    def __init__(self):
        self.rfd, self.wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.stop = None  # the first stop signal's name
        self.hup = False
        signal.set_wakeup_fd(self.wfd, warn_on_full_buffer=False)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._record)

    def _record(self, signum, frame):
        if signum == signal.SIGHUP:
            self.hup = True
        elif self.stop is None:
            self.stop = signal.Signals(signum).name

    def wake(self):
        """Wake the loop from another thread (a finished reload)."""
        try:
            os.write(self.wfd, b"\0")
        except BlockingIOError:
            pass  # the pipe is full: the loop is awake anyway

    def wait(self, timeout, others=()):
        """Sleep until a signal, a wake(), one of `others` (objects with fileno()) is readable, or `timeout`
        seconds; empties the pipe. Returns the readable ones of `others`."""
        ready, _, _ = select.select([self.rfd, *others], [], [], max(0.0, timeout))
        if self.rfd in ready:
            try:
                while os.read(self.rfd, 4096):
                    pass
            except BlockingIOError:
                pass
        return [r for r in ready if r is not self.rfd]

    def take_hup(self):
        hup, self.hup = self.hup, False
        return hup


class Reloader:
    """Reads and checks the config file in a worker thread, so a slow or hostile file never holds up
    the counting loop or the watchdog. One read at a time: SIGHUPs that arrive while one runs make one
    more read after it, however many they are."""

    def __init__(self, path, wake):
        self.path = path
        self.wake = wake
        self.thread = None
        self.result = None  # (Config or None, error message or None)
        self.again = False

    def request(self):
        if self.thread is not None:
            self.again = True
            return
        self.result = None
        self.thread = threading.Thread(target=self._read, name="reload", daemon=True)
        self.thread.start()

    def _read(self):
        try:
            self.result = (config_mod.load(self.path), None)
        except config_mod.ConfigError as e:
            self.result = (None, str(e))
        except BaseException as e:  # config.load catches everything it knows; nothing may kill a reload
            self.result = (None, "%s: cannot load the config (%s): check it with --config.check"
                           % (self.path, type(e).__name__))
        finally:
            self.wake()

    def done(self):
        """The finished read's (config, error), or None while one is running or none was asked for."""
        if self.thread is None or self.thread.is_alive():
            return None
        self.thread.join()
        self.thread, result = None, self.result
        if self.again:
            self.again = False
            self.request()
        return result


class Daemon:
    def __init__(self, config, config_file, listen_address, telemetry_path, web_config=None):
        self.config = config
        self.web_config = web_config
        self.config_file = config_file
        self.listen_address = listen_address
        self.telemetry_path = telemetry_path
        self.signals = Signals()
        self.reloader = Reloader(config_file, self.signals.wake)

    def status(self, text):
        log.info(text)
        sdnotify.notify("STATUS=" + text)

    def start(self):
        """Everything that can fail at start-up, in order; raises LoadError, ListenError.

        Privileges and the listen address are checked before anything is logged, so that each of those
        failures is a single line."""
        tracefs = loader.preflight()
        limit_malloc_arenas()
        self.registry = CollectorRegistry(auto_describe=True)  # so that ?name[]= finds the collector's metrics
        watcher = webconfig.Watcher(self.web_config) if self.web_config is not None else None
        self.events = events.EventLog(self.config.events_keep)
        self.httpd = web.bind(self.listen_address, self.telemetry_path, self.registry, web.raise_file_limit(), watcher,
                              routes={"/errors": events.app(self.events)})
        self.tables = socket_tables(self.config.max_sockets)
        self.status("loading BPF programs")
        t0 = time.monotonic()
        try:
            self.hz = events.kernel_hz()
            self.programs = loader.load(tracefs, self.config.map_size, self.tables,
                                        self.config.syscall_tracepoints, function_hooks=self.config.function_hooks,
                                        hz=self.hz)
        except loader.LoadError:
            self.httpd.server_close()
            raise
        attached = sum(all(ok for _, ok in hooks) for hooks in self.programs.attached.values())
        log.info("attached the hooks of %d of %d signals in %.2fs", attached, len(self.programs.attached),
                 time.monotonic() - t0)
        self.seed_owners()
        self.decoder = decode.Decoder(decode.reset_reasons(self.programs.formats.get("tcp:tcp_send_reset")),
                                      self.programs.unix_path)
        self.pods = PodResolver(self.config.pod_host_root)
        self.aggregator = Aggregator(self.config, unit_of=UnitResolver(), pod_of=self.pods.get)
        self.events.labels, self.events.dropped = self.aggregator.extra_labels, self.programs.event_drops
        self.event_reader = events.Reader(
            bpfmap.EventRing(self.programs.events_fd, abi.EVENTS_RING_BYTES),
            events.Decoder(self.hz, self.decoder.reasons), self.events,
            prepare=self.pods.prepare if self.config.pod_labels else None)
        self.programs.event_interval_ns = event_interval_ns(self.config)
        self.drain = Drain(self.programs, count_flags(self.config))
        sweep = self.programs.listen_sweep
        self.listen_queues = ListenQueues(kernel=KernelListeners(*sweep, adopt=self.programs.listen_adopt)
                                          if sweep else None)
        self.poll_listeners()  # the baseline: drops from before start-up are not ours
        self.registry.register(ErrnoCollector(self.aggregator, self._status))
        ProcessCollector(registry=self.registry)
        if self.web_config is not None:
            log.info("web config %s: %s", self.web_config.path, self.web_config.describe())
            if self.web_config.users and self.web_config.tls is None:
                log.warning("basic auth without TLS: passwords cross the network in the clear; add "
                            "tls_server_config to %s", self.web_config.path)
            if self.web_config.tls is not None and self.web_config.http2:
                log.info("http2 is not served (HTTP/1.1 only, which Prometheus scrapes with): set "
                         "http_server_config.http2: false in %s to say so", self.web_config.path)
        web.start(self.httpd)
        self.status("serving metrics on %s%s%s" % (self.listen_address, self.telemetry_path,
                                                   " over TLS" if self.httpd.scheme == "https" else ""))
        sdnotify.notify("READY=1")

    def seed_owners(self):
        """After attaching (a socket opened meanwhile is the programs' own): the owners of existing sockets.
        Never fatal: without them, those sockets' kernel-side events carry no process, as before."""
        self.status("seeding the owners of existing sockets")
        try:
            r = seed.seed(self.programs.seeded_fd, self.programs.listeners_fd, self.programs.ephemeral)
        except seed.SeedError as e:
            log.warning("%s: sockets opened before errnomon started carry no process on kernel-side events", e)
            return
        except Exception as e:  # noqa: BLE001 - seeding only adds attribution: it must never stop start-up
            log.warning("seeding failed (%s: %s): sockets opened before errnomon started carry no process on "
                        "kernel-side events", type(e).__name__, e)
            return
        log.info("seeded %d of %d existing TCP sockets (%d with their process) and %d listening ports in %.2fs",
                 r.owners, r.sockets, r.attributed, r.listeners, r.seconds)
        if r.owners > self.tables[1]:
            log.warning("%d existing sockets but the seeded owner table holds %d (kernel.max_sockets %s): the "
                        "owners of the oldest were evicted; raise kernel.max_sockets, or leave it at auto",
                        r.owners, self.tables[1], self.config.max_sockets or "auto")
        if r.denied:
            log.warning("could not read the fd tables of %d processes (permission denied: errnomon needs root or "
                        "CAP_SYS_PTRACE to see other users' sockets): their existing sockets carry no process "
                        "on kernel-side events", r.denied)

    def _status(self):
        return {"attached": self.programs.attached, "drops": self.programs.drops(), "missed": self.programs.missed(),
                "event_drops": self.programs.event_drops()}

    def drain_once(self):
        events = self.drain()
        if events:
            events = [(self.decoder(key), n) for key, n in events]
            if self.config.pod_labels:  # file reads for new containers, outside the aggregator's lock
                self.pods.prepare({event.cgroup for event, _ in events})
            self.aggregator.add(events)
        if len(events) >= TRIM_AFTER:
            del events
            trim_heap()

    def poll_listeners(self):
        try:
            events = self.listen_queues.poll()
        except Exception as e:  # noqa: BLE001 - a netlink failure must not stop the counting loop
            log.warning("listen queues not read: %s", e)
            return
        if events:
            if self.config.pod_labels:
                self.pods.prepare({event.cgroup for event, _ in events})
            self.aggregator.add(events)

    def apply(self, new, error):
        """Apply a finished reload; a failed one keeps the running config and every count."""
        if error is not None:
            log.error("reload failed, keeping the running config and all counts: %s", error)
            return
        for key in config_mod.KERNEL_KEYS:
            if getattr(new, key) != getattr(self.config, key):
                log.warning("kernel.%s changed: takes effect at the next restart", key)
        self.config = new
        self.pods.configure(new.pod_host_root)
        self.aggregator.configure(new)
        self.events.configure(new.events_keep)
        self.event_reader.prepare = self.pods.prepare if new.pod_labels else None
        self.programs.event_interval_ns = event_interval_ns(new)
        self.drain.set_count_flags(count_flags(new))  # writes the settings, the event rate with them
        log.info("config reloaded from %s", self.config_file)

    def run(self):
        signals = self.signals
        watchdog = sdnotify.watchdog_interval()
        now = time.monotonic()
        next_drain, next_ping, next_expire = now + self.config.drain_interval, now, now + EXPIRE_EVERY
        next_listen = now + LISTEN_POLL_EVERY
        try:
            while signals.stop is None:
                if signals.take_hup():
                    self.reloader.request()
                finished = self.reloader.done()
                if finished is not None:
                    self.apply(*finished)
                now = time.monotonic()
                if watchdog and now >= next_ping:
                    sdnotify.notify("WATCHDOG=1")
                    next_ping = now + watchdog
                if now >= next_drain:
                    self.drain_once()
                    # no key made since the last drain: the next one the programs make wakes the loop (monitor/drain.py)
                    next_drain = math.inf if self.drain.asleep else now + self.config.drain_interval
                if now >= next_listen:
                    self.poll_listeners()
                    next_listen = now + LISTEN_POLL_EVERY
                if now >= next_expire:
                    self.aggregator.expire()
                    next_expire = now + EXPIRE_EVERY
                # the watchdog has its own deadline: a WatchdogSec shorter than the drain interval still works
                deadline = min(next_drain, next_listen, next_expire, next_ping if watchdog else math.inf)
                if not self.drain.asleep:  # error events at least every EVENTS_EVERY, however long the interval
                    deadline = min(deadline, self.event_reader.last + EVENTS_EVERY)
                # the ring only while asleep: awake, it fills until the next drain empties it
                if signals.wait(deadline - time.monotonic(), [self.drain.ring] if self.drain.asleep else []):
                    next_drain = self.drain.woken(self.config.drain_interval)
                # Error events, at every wake-up: every event comes with a count, and a count wakes a sleeping
                # loop (its key is the generation's first); an awake loop drains every interval. So the events
                # ring needs no wake-ups of its own.
                self.event_reader()
            log.info("%s received", signals.stop)
        finally:
            self.stop()

    def stop(self):
        sdnotify.notify("STOPPING=1")
        log.info("shutting down: detaching BPF programs")
        try:
            self.httpd.shutdown()
            self.httpd.server_close()
        finally:
            self.programs.close()
