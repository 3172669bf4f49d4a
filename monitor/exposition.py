"""The scrape, streamed: the exposition body written a slice of series at a time, gzipped as it goes.

prometheus-client builds a whole scrape in memory (every sample an object with a labels dict, then all the
lines, then one joined string, then its gzipped copy): for 30,000 label sets that was ~40 MiB held at once
for a 6 MB body. Here the collector hands out each metric in families of at most SLICE samples (one name,
consecutive), prometheus-client's own encoder formats each slice (so escaping and both formats stay the
library's), and the body leaves in pieces of about PIECE bytes: a scrape holds one slice and one piece.
A metric's header lines (# HELP, # TYPE) are written once, before its first slice; OpenMetrics' closing
# EOF once, at the end.
"""

import zlib

from prometheus_client.exposition import choose_encoder

SLICE = 1000        # samples formatted at a time
PIECE = 1 << 16     # bytes handed to the HTTP server at a time


class _One:
    """A registry of one family, for the library's encoders."""

    def __init__(self, family):
        self.family = family

    def collect(self):
        return [self.family]


EOF = b"# EOF\n"


def _body(registry, encoder, openmetrics):
    previous = None
    for family in registry.collect():
        text = encoder(_One(family))
        if openmetrics and text.endswith(EOF):
            text = text[:-len(EOF)]
        if family.name == previous:  # a further slice of the same metric: its samples only
            text = b"".join(line for line in text.splitlines(keepends=True) if not line.startswith(b"# "))
        previous = family.name
        yield text
    if openmetrics:
        yield EOF


def _pieces(chunks, size=PIECE):
    buffered, length = [], 0
    for chunk in chunks:
        if chunk:
            buffered.append(chunk)
            length += len(chunk)
        if length >= size:
            yield b"".join(buffered)
            buffered, length = [], 0
    if buffered:
        yield b"".join(buffered)


def _gzip(chunks, level):
    z = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # 16+: a gzip header and trailer
    for chunk in chunks:
        out = z.compress(chunk)
        if out:
            yield out
    yield z.flush()


def content(registry, accept_header, gzip_level=None):
    """(content type, iterator of body pieces) for a scrape asking with `accept_header`; gzipped at
    `gzip_level` unless None."""
    encoder, content_type = choose_encoder(accept_header)
    openmetrics = content_type.startswith("application/openmetrics-text")
    body = _pieces(_body(registry, encoder, openmetrics))
    if gzip_level is not None:
        body = _pieces(_gzip(body, gzip_level))
    return content_type, body
