"""Log output in logfmt or JSON, like Prometheus exporters."""

import json
import logging
import sys
import time

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}


def _ts(record):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + ".%03dZ" % record.msecs


def _level(record):
    return {"WARNING": "warn"}.get(record.levelname, record.levelname.lower())


class LogfmtFormatter(logging.Formatter):
    def format(self, record):
        msg = record.getMessage().replace('"', '\\"')
        return 'ts=%s level=%s caller=%s msg="%s"' % (_ts(record), _level(record), record.name, msg)


class JSONFormatter(logging.Formatter):
    def format(self, record):
        return json.dumps({"ts": _ts(record), "level": _level(record), "caller": record.name,
                           "msg": record.getMessage()})


def setup(level, fmt):
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[level])
