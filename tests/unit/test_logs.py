"""monitor/logs.py: one line per record, control characters escaped, no traceback."""

import json
import logging

import pytest

from monitor import logs


def record(msg, *args, exc_info=None):
    return logging.LogRecord("errnomon.web", logging.ERROR, __file__, 1, msg, args, exc_info)


@pytest.mark.parametrize("raw, escaped", [
    ("GET /\x1b[2J\r\nfake=line", "GET /\\x1b[2J\\x0d\\x0afake=line"),
    ("tab\there\x00\x7f\x85\u2028", "tab\\x09here\\x00\\x7f\\x85\\u2028"),
    ("plain é ü ✓", "plain é ü ✓"),
])
def test_escape_controls(raw, escaped):
    assert logs.escape_controls(raw) == escaped


def test_logfmt_escapes_and_stays_one_line():
    line = logs.LogfmtFormatter().format(record("bad key %s", 'a"b\\c\nts=x level=error'))
    assert "\n" not in line
    assert line.endswith('msg="bad key a\\"b\\\\c\\x0ats=x level=error"')


def test_json_escapes_c1_and_line_separators():
    line = logs.JSONFormatter().format(record("x\x85y\u2028z\x1b"))
    assert "\n" not in line and "\x85" not in line and "\u2028" not in line
    assert json.loads(line)["msg"] == "x\\x85y\\u2028z\\x1b"


def test_exception_is_its_last_line_not_a_traceback():
    try:
        raise ValueError("boom\x1b")
    except ValueError:
        import sys
        exc_info = sys.exc_info()
    line = logs.LogfmtFormatter().format(record("Exception while serving /metrics", exc_info=exc_info))
    assert line.endswith('msg="Exception while serving /metrics: ValueError: boom\\x1b"')
    assert "Traceback" not in line and "\n" not in line
