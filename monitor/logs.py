"""Log output in logfmt or JSON, like Prometheus exporters; one line per record, whatever it holds."""

import json
import logging
import re
import sys
import time

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}

# C0, DEL, C1 and the Unicode line separators: a request path, a header or a config key may hold any of
# them, and written raw they would forge log lines or drive the terminal.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escape(match):
    code = ord(match.group())
    return "\\x%02x" % code if code < 0x100 else "\\u%04x" % code


def escape_controls(text):
    """`text` with every control character written as \\xNN (or \\uNNNN): printable, one line."""
    return _CONTROL.sub(_escape, text)


def _ts(record):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + ".%03dZ" % record.msecs


def _level(record):
    return {"WARNING": "warn"}.get(record.levelname, record.levelname.lower())


def _message(record):
    """The message and, for a logged exception (waitress logs one for a failed request), its last line:
    never a traceback."""
    msg = record.getMessage()
    if record.exc_info and record.exc_info[1] is not None:
        exc = record.exc_info[1]
        msg += ": %s: %s" % (type(exc).__name__, exc)
    return msg


class LogfmtFormatter(logging.Formatter):
    def format(self, record):
        msg = escape_controls(_message(record).replace("\\", "\\\\").replace('"', '\\"'))
        return 'ts=%s level=%s caller=%s msg="%s"' % (_ts(record), _level(record), record.name, msg)


class JSONFormatter(logging.Formatter):
    def format(self, record):
        # json.dumps escapes C0 and DEL itself; C1 and U+2028/9 are escaped here
        return json.dumps({"ts": _ts(record), "level": _level(record), "caller": record.name,
                           "msg": escape_controls(_message(record))})


def setup(level, fmt):
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[level])
