"""Real sock_diag dumps, one file a kernel (capture.py made them; its doc says how), for the decoding tests
of monitor/seed.py and monitor/listen_queue.py. Each holds the kernel's recv() buffers for errnomon's two
dumps and what those sockets are by other means, so the tests replay real bytes through whichever
pyroute2 is installed (in the kernel-matrix guests: their distribution's) and compare with the truth."""

import glob
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
CAPTURES = sorted(glob.glob(os.path.join(HERE, "linux-*.json")))
IDS = [os.path.basename(p)[:-len(".json")] for p in CAPTURES]


def load(path):
    with open(path) as f:
        return json.load(f)


def replay(dumps, marshal):
    """Every message of a capture's dumps ({family: [recv() buffer, ...]}) as marshal (a pyroute2 MarshalDiag,
    as a DiagSocket holds one) parses them: the same call that decodes what a DiagSocket receives."""
    return [msg for buffers in dumps.values() for data in buffers for msg in marshal.parse(bytes.fromhex(data))]
