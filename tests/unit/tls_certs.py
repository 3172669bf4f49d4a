"""Test certificates made with the openssl command line: a CA, a server certificate for 127.0.0.1 and
localhost, a client certificate with DNS and URI SANs, and a stranger's from another CA. Also bcrypt
hashes and free ports in 19700-19799 (the range these tests may use)."""

import os
import shutil
import socket
import subprocess
import tempfile

import bcrypt

PORTS = range(19700, 19800)
PASSWORD = "tlsh-secret"


def free_port(host="127.0.0.1", taken=()):
    for port in PORTS:
        if port in taken:
            continue
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port in 19700-19799")


def hashed(password=PASSWORD, cost=4):
    """A bcrypt hash as htpasswd writes it ($2y$); cost 4 keeps the tests fast."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(cost)).decode().replace("$2b$", "$2y$", 1)


class Certs:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="tlsh")
        self._ca("ca", "tlsh-ca")
        self._ca("other-ca", "tlsh-other-ca")
        self._leaf("server", "ca", "subjectAltName=IP:127.0.0.1,DNS:localhost")
        self._leaf("client", "ca", "subjectAltName=DNS:prometheus.tlsh,URI:spiffe://tlsh/prometheus\n"
                                   "extendedKeyUsage=clientAuth")
        self._leaf("stranger", "other-ca", "subjectAltName=DNS:prometheus.tlsh\nextendedKeyUsage=clientAuth")

    def path(self, name):
        return os.path.join(self.dir, name)

    def _openssl(self, *args):
        subprocess.run(["openssl", *args], cwd=self.dir, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE)

    def _ca(self, name, cn):
        self._openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                      "-keyout", name + ".key", "-out", name + ".crt", "-days", "2", "-subj", "/CN=" + cn)

    def _leaf(self, name, ca, extensions):
        with open(self.path(name + ".ext"), "w") as f:
            f.write(extensions + "\n")
        self._openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                      "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=tlsh-" + name)
        self._openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".crt", "-CAkey", ca + ".key",
                      "-CAcreateserial", "-out", name + ".crt", "-days", "2", "-extfile", name + ".ext")

    def remove(self):
        shutil.rmtree(self.dir, ignore_errors=True)
