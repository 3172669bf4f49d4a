"""Load and validate the errnomon YAML configuration.

Every key is optional; an empty file (or ``{}``) yields :class:`Config` defaults.
Every validation problem raises :class:`ConfigError` whose message is a single
line of the form ``<source>: <key.path>: <what is wrong>: <how to fix it>``.

Only the standard library and PyYAML are used.
"""

import difflib
import ipaddress
import math
import re
from dataclasses import dataclass
from typing import Any, Dict, Tuple

import yaml
from yaml.reader import ReaderError

__all__ = ["ConfigError", "Group", "Config", "parse", "load", "KERNEL_KEYS"]

# Settings that size kernel maps: they only take effect at start, a reload
# cannot change them.
KERNEL_KEYS = ("map_size", "max_sockets", "syscall_tracepoints")

# Errnos that the kernel side filters out unless listed in kernel.count.
COUNTABLE_ERRNOS = ("EAGAIN", "EINTR", "EINPROGRESS")

# Label values the exporter itself uses for the remote label; a group may not
# take them.
RESERVED_GROUP_NAMES = ("other", "")

_SECTIONS = {
    "labels": ("pid", "unit", "pod", "pod_host_root"),
    "remote": ("groups", "ipv4_prefix", "ipv6_prefix"),
    "series": ("budget", "ttl"),
    "kernel": ("count", "map_size", "max_sockets", "drain_interval", "syscall_tracepoints"),
}
_GROUP_KEYS = ("name", "cidrs")


class ConfigError(Exception):
    """One line: what is wrong and how to fix it (the CLI prints str(e) and exits 2)."""

    def __init__(self, message: str) -> None:
        # Guarantee a single line whatever ended up in the message.
        text = str(message).replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
        super().__init__(text)


@dataclass(frozen=True)
class Group:
    name: str
    networks: tuple  # of ipaddress.IPv4Network / IPv6Network


@dataclass(frozen=True)
class Config:
    pid_label: bool = False        # labels.pid
    unit_label: bool = False       # labels.unit
    pod_labels: bool = False       # labels.pod: namespace, pod and container labels
    pod_host_root: str = "/"       # labels.pod_host_root: where the host's / is seen (runtime state files)
    groups: tuple = ()             # remote.groups (tuple of Group), first match wins
    ipv4_prefix: int = 32          # remote.ipv4_prefix (0..32)
    ipv6_prefix: int = 128         # remote.ipv6_prefix (0..128)
    budget: int = 2000             # series.budget (1..1_000_000) per metric
    ttl: float = 3600.0            # series.ttl seconds; 0 = keep forever
    count: frozenset = frozenset() # kernel.count: subset of {"EAGAIN", "EINTR", "EINPROGRESS"}
    map_size: int = 16384          # kernel.map_size (256..1048576)
    max_sockets: int = 65536       # kernel.max_sockets (1024..4194304)
    drain_interval: float = 0.5    # kernel.drain_interval seconds (0.05..10)
    syscall_tracepoints: bool = False  # kernel.syscall_tracepoints: connect/accept exits (op=connect, accept)


# ---------------------------------------------------------------------------
# helpers


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, dict):
        return "mapping"
    return type(value).__name__


def _describe(value: Any) -> str:
    """A short, single-line rendering of a YAML value plus its type."""
    if value is None:
        return "nothing (null)"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return "%s (%s)" % (text, _type_name(value))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fmt_seconds(seconds: float) -> str:
    if seconds == 0:
        return "0"
    if abs(seconds) < 1:
        return "%gms" % (seconds * 1000)
    return "%gs" % seconds


_DURATION_RE = re.compile(r"^\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source

    # -- errors -------------------------------------------------------------

    def error(self, path: str, message: str) -> ConfigError:
        if path:
            return ConfigError("%s: %s: %s" % (self.source, path, message))
        return ConfigError("%s: %s" % (self.source, message))

    # -- structure ----------------------------------------------------------

    def mapping(self, value: Any, path: str, valid: Tuple[str, ...]) -> Dict[str, Any]:
        """Check that ``value`` is a mapping whose keys are all in ``valid``.

        A YAML null (an empty section such as ``labels:``) counts as empty.
        """
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.error(
                path,
                "expected a mapping with keys %s, got %s" % (", ".join(valid), _describe(value)),
            )
        for key in value:
            if isinstance(key, str) and key in valid:
                continue
            key_text = str(key)
            key_path = "%s.%s" % (path, key_text) if path else key_text
            message = "unknown key; valid keys here: %s" % ", ".join(valid)
            close = difflib.get_close_matches(key_text, valid, n=1)
            if not close:
                close = [v for v in valid if v.lower() == key_text.lower()]
            if close:
                message += "; did you mean %r?" % close[0]
            raise self.error(key_path, message)
        return value

    # -- scalars ------------------------------------------------------------

    def boolean(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            raise self.error(path, "expected true or false, got %s" % _describe(value))
        return value

    def integer(self, value: Any, path: str, low: int, high: int) -> int:
        if not _is_int(value):
            raise self.error(
                path,
                "expected a whole number between %d and %d, got %s" % (low, high, _describe(value)),
            )
        if not low <= value <= high:
            raise self.error(path, "must be between %d and %d, got %d" % (low, high, value))
        return int(value)

    def duration(self, value: Any, path: str) -> float:
        hint = "use e.g. 500ms, 2s, 1m or 1h"
        if _is_number(value):
            seconds = float(value)
        elif isinstance(value, str):
            match = _DURATION_RE.match(value)
            if not match:
                raise self.error(path, "%r is not a duration: %s" % (value, hint))
            seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        else:
            raise self.error(path, "expected a duration, got %s: %s" % (_describe(value), hint))
        if not math.isfinite(seconds):
            raise self.error(path, "%r is not a finite duration: %s" % (value, hint))
        return seconds

    # -- sections -----------------------------------------------------------

    def parse(self, data: Any) -> Config:
        if data is None:
            return Config()
        if not isinstance(data, dict):
            raise self.error(
                "", "the config must be a mapping of sections (%s)" % ", ".join(_SECTIONS)
            )
        top = self.mapping(data, "", tuple(_SECTIONS))
        fields: Dict[str, Any] = {}

        labels = self.mapping(top.get("labels"), "labels", _SECTIONS["labels"])
        if "pid" in labels:
            fields["pid_label"] = self.boolean(labels["pid"], "labels.pid")
        if "unit" in labels:
            fields["unit_label"] = self.boolean(labels["unit"], "labels.unit")
        if "pod" in labels:
            fields["pod_labels"] = self.boolean(labels["pod"], "labels.pod")
        if "pod_host_root" in labels:
            root = labels["pod_host_root"]
            if not isinstance(root, str) or not root.startswith("/"):
                raise self.error("labels.pod_host_root", "expected an absolute path such as / or /host, got %s"
                                 % _describe(root))
            fields["pod_host_root"] = root

        remote = self.mapping(top.get("remote"), "remote", _SECTIONS["remote"])
        if "groups" in remote:
            fields["groups"] = self.groups(remote["groups"], "remote.groups")
        if "ipv4_prefix" in remote:
            fields["ipv4_prefix"] = self.integer(remote["ipv4_prefix"], "remote.ipv4_prefix", 0, 32)
        if "ipv6_prefix" in remote:
            fields["ipv6_prefix"] = self.integer(
                remote["ipv6_prefix"], "remote.ipv6_prefix", 0, 128
            )

        series = self.mapping(top.get("series"), "series", _SECTIONS["series"])
        if "budget" in series:
            fields["budget"] = self.integer(series["budget"], "series.budget", 1, 1_000_000)
        if "ttl" in series:
            ttl = self.duration(series["ttl"], "series.ttl")
            if ttl < 0:
                raise self.error(
                    "series.ttl",
                    "must be 0 (keep forever) or a positive duration, got %s" % _fmt_seconds(ttl),
                )
            fields["ttl"] = ttl

        kernel = self.mapping(top.get("kernel"), "kernel", _SECTIONS["kernel"])
        if "count" in kernel:
            fields["count"] = self.count(kernel["count"], "kernel.count")
        if "map_size" in kernel:
            fields["map_size"] = self.integer(kernel["map_size"], "kernel.map_size", 256, 1048576)
        if "max_sockets" in kernel:
            fields["max_sockets"] = self.integer(
                kernel["max_sockets"], "kernel.max_sockets", 1024, 4194304
            )
        if "syscall_tracepoints" in kernel:
            fields["syscall_tracepoints"] = self.boolean(kernel["syscall_tracepoints"], "kernel.syscall_tracepoints")
        if "drain_interval" in kernel:
            interval = self.duration(kernel["drain_interval"], "kernel.drain_interval")
            if not 0.05 <= interval <= 10.0:
                raise self.error(
                    "kernel.drain_interval",
                    "must be between 50ms and 10s, got %s" % _fmt_seconds(interval),
                )
            fields["drain_interval"] = interval

        return Config(**fields)

    def count(self, value: Any, path: str) -> frozenset:
        allowed = ", ".join(COUNTABLE_ERRNOS)
        if value is None:
            return frozenset()
        if not isinstance(value, list):
            raise self.error(
                path,
                "expected a list of errno names (any of %s), got %s" % (allowed, _describe(value)),
            )
        names = set()
        for index, item in enumerate(value):
            item_path = "%s[%d]" % (path, index)
            if not isinstance(item, str):
                raise self.error(
                    item_path,
                    "expected an errno name (one of %s), got %s" % (allowed, _describe(item)),
                )
            if item not in COUNTABLE_ERRNOS:
                message = "%r cannot be listed here: allowed values are %s" % (item, allowed)
                if item.upper() in COUNTABLE_ERRNOS:
                    message += "; did you mean %r?" % item.upper()
                raise self.error(item_path, message)
            names.add(item)
        return frozenset(names)

    def groups(self, value: Any, path: str) -> tuple:
        example = "e.g. {name: lan, cidrs: [10.0.0.0/8]}"
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.error(
                path, "expected a list of groups (%s), got %s" % (example, _describe(value))
            )
        result = []
        seen: Dict[str, str] = {}
        for index, item in enumerate(value):
            item_path = "%s[%d]" % (path, index)
            if not isinstance(item, dict):
                raise self.error(
                    item_path,
                    "expected a group with a name and cidrs (%s), got %s"
                    % (example, _describe(item)),
                )
            entry = self.mapping(item, item_path, _GROUP_KEYS)
            for key in _GROUP_KEYS:
                if key not in entry:
                    raise self.error(
                        item_path,
                        "missing %r: each group needs a name and a list of cidrs (%s)"
                        % (key, example),
                    )
            name = self.group_name(entry["name"], item_path + ".name")
            if name in seen:
                raise self.error(
                    item_path + ".name",
                    "duplicate group name %r (already used by %s): group names must be unique"
                    % (name, seen[name]),
                )
            seen[name] = item_path
            networks = self.cidrs(entry["cidrs"], item_path + ".cidrs")
            result.append(Group(name=name, networks=networks))
        return tuple(result)

    def group_name(self, value: Any, path: str) -> str:
        if not isinstance(value, str):
            raise self.error(path, "expected a string, got %s: quote it" % _describe(value))
        if value == "":
            raise self.error(path, "must not be empty: give the group a name such as 'lan'")
        if value in RESERVED_GROUP_NAMES:
            raise self.error(
                path,
                "%r is reserved (it labels peers outside every group): choose another name"
                % value,
            )
        return value

    def cidrs(self, value: Any, path: str) -> tuple:
        if not isinstance(value, list) or not value:
            raise self.error(
                path,
                "expected a non-empty list of CIDR networks (e.g. [10.0.0.0/8, \"fd00::/8\"]), "
                "got %s" % _describe(value),
            )
        networks = []
        for index, item in enumerate(value):
            networks.append(self.network(item, "%s[%d]" % (path, index)))
        return tuple(networks)

    def network(self, value: Any, path: str):
        if not isinstance(value, str):
            raise self.error(
                path,
                "expected a CIDR network string such as 10.0.0.0/8, got %s" % _describe(value),
            )
        text = value.strip()
        cls = ipaddress.IPv6Network if ":" in text else ipaddress.IPv4Network
        try:
            return cls(text, strict=True)
        except ValueError as exc:
            detail = str(exc)
            if "has host bits set" in detail:
                fixed = cls(text, strict=False)
                raise self.error(path, "%r has host bits set: did you mean %s?" % (value, fixed))
            raise self.error(path, "%r is not a valid CIDR network: %s" % (value, detail))


def _yaml_error(source: str, exc: yaml.YAMLError) -> ConfigError:
    if isinstance(exc, ReaderError):
        return ConfigError(
            "%s: invalid YAML: %s at character %d: remove it or save the file as UTF-8"
            % (source, exc.reason, exc.position)
        )
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    context = getattr(exc, "context", None)
    if problem:
        detail = "%s (%s)" % (problem, context) if context else problem
    else:
        lines = str(exc).strip().splitlines()
        detail = lines[0] if lines else type(exc).__name__
    if mark is not None:
        return ConfigError("%s: line %d: invalid YAML: %s" % (source, mark.line + 1, detail))
    return ConfigError("%s: invalid YAML: %s" % (source, detail))


# ---------------------------------------------------------------------------
# public API


def parse(text: str, source: str = "<config>") -> Config:
    """Parse and validate config ``text``; ``source`` prefixes every error message."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise _yaml_error(source, exc) from None
    return _Parser(source).parse(data)


def load(path: str) -> Config:
    """Read and parse the config file at ``path``."""
    try:
        with open(path, "r", encoding="utf-8") as handle:
            text = handle.read()
    except UnicodeDecodeError as exc:
        raise ConfigError(
            "%s: cannot read config file: not valid UTF-8 (byte offset %d): save it as UTF-8"
            % (path, exc.start)
        ) from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(
            "%s: cannot read config file: %s: check --config.file" % (path, reason)
        ) from None
    return parse(text, source=path)
