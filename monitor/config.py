"""Load and validate the errnomon YAML configuration.

Every key is optional; an empty file (or ``{}``) yields :class:`Config` defaults.
Every validation problem raises :class:`ConfigError` whose message is a single
line of the form ``<source>: <key.path>: <what is wrong>: <how to fix it>``.

Only the standard library and PyYAML are used.
"""

import difflib
import ipaddress
import math
import os
import re
import reprlib
import stat
from dataclasses import dataclass
from typing import Any, Dict, Tuple

import yaml
from yaml.reader import ReaderError

from .logs import escape_controls

__all__ = ["ConfigError", "Group", "Config", "parse", "read", "load", "KERNEL_KEYS"]

# What a config may cost, checked before and while parsing: a real one is a few hundred bytes, a few
# dozen values and 5 levels deep. A file that breaks these is a mistake or an attack, never a config.
MAX_BYTES = 1 << 20       # file size
MAX_NODES = 50_000        # YAML values, aliases counted as what they expand to
MAX_DEPTH = 32            # nesting levels
MAX_NUMBER_CHARS = 32     # characters of one number, checked before int()/float()

# Settings that size kernel maps: they only take effect at start, a reload
# cannot change them.
KERNEL_KEYS = ("map_size", "max_sockets", "syscall_tracepoints", "function_hooks")

# Families of kernel-function hooks that stand in for tracepoints an older kernel lacks (monitor/loader.py
# SIGNALS): fentry/fexit (BPF trampolines) and kprobe/kretprobe.
FUNCTION_HOOK_FAMILIES = ("fentry", "kprobe")

# Errnos that the kernel side filters out unless listed in kernel.count.
COUNTABLE_ERRNOS = ("EAGAIN", "EINTR", "EINPROGRESS")

# Label values the exporter itself uses for the remote label; a group may not
# take them.
RESERVED_GROUP_NAMES = ("other", "")

_SECTIONS = {
    "labels": ("pid", "unit", "pod", "pod_host_root"),
    "remote": ("groups", "ipv4_prefix", "ipv6_prefix"),
    "series": ("budget", "ttl"),
    "kernel": ("count", "map_size", "max_sockets", "drain_interval", "syscall_tracepoints", "function_hooks"),
    "events": ("enabled", "rate", "keep"),
}
_GROUP_KEYS = ("name", "cidrs", "paths")


class ConfigError(Exception):
    """One line: what is wrong and how to fix it (the CLI prints str(e) and exits 2)."""

    def __init__(self, message: str) -> None:
        # Guarantee a single line whatever ended up in the message, and no raw control characters
        # (a key or value from the file may hold any): they are shown escaped.
        text = str(message).replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
        super().__init__(escape_controls(text))


@dataclass(frozen=True)
class Group:
    name: str
    networks: tuple  # of ipaddress.IPv4Network / IPv6Network
    paths: tuple = ()  # fnmatch patterns of unix socket remotes ("/run/php/*.sock", "@name*")


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
    max_sockets: int = 0           # kernel.max_sockets (1024..4194304), 0: auto (from the host's sockets at start)
    drain_interval: float = 0.5    # kernel.drain_interval seconds (0.05..10)
    syscall_tracepoints: bool = False  # kernel.syscall_tracepoints: connect/accept exits (op=connect, accept)
    # kernel.function_hooks: where a tracepoint is missing (older kernels), the kernel-function hooks allowed
    function_hooks: tuple = FUNCTION_HOOK_FAMILIES
    events_enabled: bool = True    # events.enabled: error events for GET /errors
    events_rate: int = 1000        # events.rate (1..1_000_000) events a second at most, a burst of as many
    events_keep: int = 10000       # events.keep (1..1_000_000) newest events kept


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


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxset = 2, 3, 3, 3
_REPR.maxstring, _REPR.maxlong, _REPR.maxother = 50, 40, 40


def _short(value: Any) -> str:
    """repr() bounded in work and length whatever the value (reprlib: never the whole expanded value)."""
    text = _REPR.repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe(value: Any) -> str:
    """A short, single-line rendering of a YAML value plus its type."""
    if value is None:
        return "nothing (null)"
    return "%s (%s)" % (_short(value), _type_name(value))


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
            key_text = key if isinstance(key, str) and len(key) <= 60 else _short(key)
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
                raise self.error(path, "%s is not a duration: %s" % (_short(value), hint))
            seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        else:
            raise self.error(path, "expected a duration, got %s: %s" % (_describe(value), hint))
        if not math.isfinite(seconds):
            raise self.error(path, "%s is not a finite duration: %s" % (_short(value), hint))
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
            value = kernel["max_sockets"]
            if isinstance(value, str) and value.strip().lower() == "auto":
                fields["max_sockets"] = 0
            elif not _is_int(value):
                raise self.error("kernel.max_sockets", "expected auto or a whole number between 1024 and 4194304, "
                                 "got %s" % _describe(value))
            else:
                fields["max_sockets"] = self.integer(value, "kernel.max_sockets", 1024, 4194304)
        if "syscall_tracepoints" in kernel:
            fields["syscall_tracepoints"] = self.boolean(kernel["syscall_tracepoints"], "kernel.syscall_tracepoints")
        if "function_hooks" in kernel:
            chosen = self.names(kernel["function_hooks"], "kernel.function_hooks", FUNCTION_HOOK_FAMILIES,
                                "hook family", "hook families")
            fields["function_hooks"] = tuple(f for f in FUNCTION_HOOK_FAMILIES if f in chosen)
        if "drain_interval" in kernel:
            interval = self.duration(kernel["drain_interval"], "kernel.drain_interval")
            if not 0.05 <= interval <= 10.0:
                raise self.error(
                    "kernel.drain_interval",
                    "must be between 50ms and 10s, got %s" % _fmt_seconds(interval),
                )
            fields["drain_interval"] = interval

        events = self.mapping(top.get("events"), "events", _SECTIONS["events"])
        if "enabled" in events:
            fields["events_enabled"] = self.boolean(events["enabled"], "events.enabled")
        if "rate" in events:
            fields["events_rate"] = self.integer(events["rate"], "events.rate", 1, 1_000_000)
        if "keep" in events:
            fields["events_keep"] = self.integer(events["keep"], "events.keep", 1, 1_000_000)

        return Config(**fields)

    def count(self, value: Any, path: str) -> frozenset:
        return self.names(value, path, COUNTABLE_ERRNOS, "errno name")

    def names(self, value: Any, path: str, allowed_names: tuple, noun: str, nouns: str = "") -> frozenset:
        """A list of names, each one of allowed_names (null: none). nouns: the plural, if not noun + s."""
        allowed = ", ".join(allowed_names)
        if value is None:
            return frozenset()
        if not isinstance(value, list):
            raise self.error(
                path,
                "expected a list of %s (any of %s), got %s" % (nouns or noun + "s", allowed, _describe(value)),
            )
        names = set()
        for index, item in enumerate(value):
            item_path = "%s[%d]" % (path, index)
            if not isinstance(item, str):
                raise self.error(
                    item_path,
                    "expected %s %s (one of %s), got %s" % ("an" if noun[0] in "aeiou" else "a", noun, allowed,
                                                            _describe(item)),
                )
            if item not in allowed_names:
                message = "%s cannot be listed here: allowed values are %s" % (_short(item), allowed)
                for name in allowed_names:
                    if item.lower() == name.lower() and item != name:
                        message += "; did you mean %r?" % name
                raise self.error(item_path, message)
            names.add(item)
        return frozenset(names)

    def groups(self, value: Any, path: str) -> tuple:
        example = "e.g. {name: lan, cidrs: [10.0.0.0/8]} or {name: php, paths: [/run/php/*.sock]}"
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
                    "expected a group with a name and cidrs or paths (%s), got %s"
                    % (example, _describe(item)),
                )
            entry = self.mapping(item, item_path, _GROUP_KEYS)
            if "name" not in entry:
                raise self.error(
                    item_path, "missing 'name': each group needs a name and a list of cidrs or paths (%s)" % example
                )
            if "cidrs" not in entry and "paths" not in entry:
                raise self.error(
                    item_path,
                    "missing 'cidrs': each group needs a list of cidrs, of paths, or both (%s)" % example,
                )
            name = self.group_name(entry["name"], item_path + ".name")
            if name in seen:
                raise self.error(
                    item_path + ".name",
                    "duplicate group name %s (already used by %s): group names must be unique"
                    % (_short(name), seen[name]),
                )
            seen[name] = item_path
            networks = self.cidrs(entry["cidrs"], item_path + ".cidrs") if "cidrs" in entry else ()
            paths = self.paths(entry["paths"], item_path + ".paths") if "paths" in entry else ()
            result.append(Group(name=name, networks=networks, paths=paths))
        return tuple(result)

    def group_name(self, value: Any, path: str) -> str:
        if not isinstance(value, str):
            raise self.error(path, "expected a string, got %s: quote it" % _describe(value))
        if value == "":
            raise self.error(path, "must not be empty: give the group a name such as 'lan'")
        if value in RESERVED_GROUP_NAMES:
            raise self.error(
                path,
                "%s is reserved (it labels peers outside every group): choose another name"
                % _short(value),
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

    def paths(self, value: Any, path: str) -> tuple:
        if not isinstance(value, list) or not value:
            raise self.error(
                path,
                "expected a non-empty list of unix socket path patterns (e.g. [/run/php/*.sock, \"@app-*\"]), "
                "got %s" % _describe(value),
            )
        patterns = []
        for index, item in enumerate(value):
            if not isinstance(item, str) or not item:
                raise self.error(
                    "%s[%d]" % (path, index),
                    "expected a unix socket path pattern such as /run/php/*.sock (fnmatch; an abstract name "
                    "as \"@name\"), got %s" % _describe(item),
                )
            patterns.append(item)
        return tuple(patterns)

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
                raise self.error(path, "%s has host bits set: did you mean %s?" % (_short(value), fixed))
            raise self.error(path, "%s is not a valid CIDR network: %s" % (_short(value), detail))


class _Refused(yaml.YAMLError):
    """A limit or a value the safe loader refuses; ``line`` is 1-based or None."""

    def __init__(self, message: str, mark=None) -> None:
        super().__init__(message)
        self.message = message
        self.line = mark.line + 1 if mark is not None else None


def _scalar_text(node) -> str:
    return _short(node.value)


class _Loader(yaml.SafeLoader):
    """PyYAML's SafeLoader with bounded cost and no surprises.

    - at most MAX_DEPTH levels of nesting (the composer recurses once per level),
    - at most MAX_NODES values, counting every alias as the size of what it stands for (the alias bomb),
    - duplicate keys refused with both lines (YAML would silently keep the last one),
    - numbers checked for length before conversion, bad !!int/!!float/!!bool/!!timestamp values refused
      with their line instead of raising ValueError/KeyError/AttributeError.
    """

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self.depth = 0
        self.nodes = 0
        self.sizes: Dict[int, int] = {}  # id(node) -> values it expands to, for aliases

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            node = self.anchors.get(event.anchor)
            if node is not None:
                self._count(self._size(node), event.start_mark)
            return super().compose_node(parent, index)
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _Refused("nested more than %d levels deep: a config needs at most 5" % MAX_DEPTH,
                           self.peek_event().start_mark)
        try:
            node = super().compose_node(parent, index)
        finally:
            self.depth -= 1
        self._count(1, node.start_mark)
        return node

    def _count(self, n, mark) -> None:
        self.nodes += n
        if self.nodes > MAX_NODES:
            raise _Refused("more than %d values (aliases count as what they repeat): "
                           "a config needs far fewer; write it out without the aliases" % MAX_NODES, mark)

    def _size(self, node) -> int:
        """How many values ``node`` stands for, aliases expanded (memoized: cheap on a bomb)."""
        known = self.sizes.get(id(node))
        if known is not None:
            return known
        size = 1
        if isinstance(node, yaml.SequenceNode):
            size += sum(self._size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            size += sum(self._size(k) + self._size(v) for k, v in node.value)
        size = min(size, MAX_NODES + 1)
        self.sizes[id(node)] = size
        return size

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: Dict[Any, Any] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node)
                except TypeError:
                    continue  # unhashable: SafeConstructor says so with its line
                if first is not key_node:
                    raise _Refused("duplicate key %s (first on line %d): keep one of them"
                                   % (_short(key), first.start_mark.line + 1), key_node.start_mark)
        return super().construct_mapping(node, deep=deep)

    def _number(self, node, construct, fix):
        if len(str(node.value).replace("_", "")) > MAX_NUMBER_CHARS:
            raise _Refused("the number %s is too long (more than %d characters): errnomon's numbers are "
                           "far smaller" % (_scalar_text(node), MAX_NUMBER_CHARS), node.start_mark)
        try:
            return construct(self, node)
        except (ValueError, TypeError, IndexError, OverflowError):
            raise _Refused("%s %s" % (_scalar_text(node), fix), node.start_mark) from None

    def construct_yaml_int(self, node):
        return self._number(node, yaml.SafeLoader.construct_yaml_int,
                            "is not a whole number: remove the !!int tag or write digits")

    def construct_yaml_float(self, node):
        return self._number(node, yaml.SafeLoader.construct_yaml_float,
                            "is not a number: remove the !!float tag or write e.g. 1.5")

    def construct_yaml_bool(self, node):
        try:
            return super().construct_yaml_bool(node)
        except (KeyError, AttributeError):
            raise _Refused("%s is not true or false: remove the !!bool tag or write true or false"
                           % _scalar_text(node), node.start_mark) from None

    def construct_yaml_timestamp(self, node):
        try:
            return super().construct_yaml_timestamp(node)
        except (ValueError, TypeError, AttributeError, OverflowError):
            raise _Refused("%s looks like a date but is not a valid one: quote it if it is text"
                           % _scalar_text(node), node.start_mark) from None


for _tag, _method in (("int", _Loader.construct_yaml_int), ("float", _Loader.construct_yaml_float),
                      ("bool", _Loader.construct_yaml_bool), ("timestamp", _Loader.construct_yaml_timestamp)):
    _Loader.add_constructor("tag:yaml.org,2002:" + _tag, _method)


def _yaml_error(source: str, exc: yaml.YAMLError) -> ConfigError:
    if isinstance(exc, _Refused):
        if exc.line is not None:
            return ConfigError("%s: line %d: %s" % (source, exc.line, exc.message))
        return ConfigError("%s: %s" % (source, exc.message))
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
    if problem and "found ':'" in problem and context and "flow" in context:
        # [::1/128] or {b: ::1}: a value starting with ':' ends a flow collection's plain scalar
        detail += ": quote IPv6 addresses inside [...] or {...}, e.g. [\"::1/128\"]"
    if mark is not None:
        return ConfigError("%s: line %d: invalid YAML: %s" % (source, mark.line + 1, detail))
    return ConfigError("%s: invalid YAML: %s" % (source, detail))


# ---------------------------------------------------------------------------
# public API


def parse(text: str, source: str = "<config>") -> Config:
    """Parse and validate config ``text``; ``source`` prefixes every error message."""
    return checked(text, source, lambda data: _Parser(source).parse(data))


def checked(text: str, source: str, check):
    """check(data) of YAML ``text`` loaded by the bounded loader; every failure one ConfigError line."""
    try:
        loader = _Loader(text)
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
        return check(data)
    except ConfigError:
        raise
    except yaml.YAMLError as exc:
        raise _yaml_error(source, exc) from None
    except (RecursionError, MemoryError) as exc:
        raise ConfigError("%s: the config is too large or too deeply nested to load (%s): simplify it"
                          % (source, type(exc).__name__)) from None
    except Exception as exc:  # the safety net: whatever PyYAML or a value raises, one line, never a traceback
        raise ConfigError("%s: cannot load the config (%s: %s): check the file with --config.check"
                          % (source, type(exc).__name__, _short(str(exc)))) from None


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def read(path: str, what: str = "config file", flag: str = "--config.file") -> str:
    """The text of the config file at ``path``, refusing before reading anything that could block or
    be unbounded: a FIFO, a device, a directory (opened non-blocking, checked with fstat), a file over
    MAX_BYTES. `what` and `flag` name the file and its flag in errors (the web config is read here too)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise ConfigError("%s: cannot read %s: %s: check %s"
                          % (path, what, exc.strerror or exc, flag)) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError("%s: cannot read %s: it is %s, not a regular file: point %s "
                              "at a YAML file" % (path, what, _kind(info.st_mode), flag))
        if info.st_size > MAX_BYTES:
            raise ConfigError("%s: cannot read %s: %d bytes is over the %d KiB limit: a config "
                              "needs a few KiB; check %s" % (path, what, info.st_size, MAX_BYTES // 1024, flag))
        chunks, size = [], 0
        while size <= MAX_BYTES:  # a file growing while read is still bounded
            chunk = os.read(fd, MAX_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > MAX_BYTES:
            raise ConfigError("%s: cannot read %s: it is over the %d KiB limit: a config needs a "
                              "few KiB; check %s" % (path, what, MAX_BYTES // 1024, flag))
        data = b"".join(chunks)
    except OSError as exc:
        raise ConfigError("%s: cannot read %s: %s: check %s"
                          % (path, what, exc.strerror or exc, flag)) from None
    finally:
        os.close(fd)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            "%s: cannot read %s: not valid UTF-8 (byte offset %d): save it as UTF-8"
            % (path, what, exc.start)
        ) from None


def load(path: str) -> Config:
    """Read and parse the config file at ``path``."""
    return parse(read(path), source=path)
