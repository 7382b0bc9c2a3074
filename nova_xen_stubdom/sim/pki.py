"""A CA and host certificates for one simulated cloud (or one test).

Real XCP-ng hosts carry XAPI's pool certificates (CN = the host UUID, see
:mod:`nova_xen_stubdom.dom0.migration_tls`); the simulator's hosts get the
same shape from a CA made per cloud: ``<dir>/ca.pem`` and, per host,
``<dir>/<uuid>.pem`` holding the host's key and certificate (CN and DNS
subjectAltName = the host UUID).  Made with the ``openssl`` command (Debian
package ``openssl``, tools/apt-packages.txt), standard library otherwise,
so dom0-side tests on Python 3.6 can use it too.
"""
import os
import shutil
import subprocess
import tempfile
import threading
from typing import Optional

DAYS = 30
#: EC P-256: keys in milliseconds (RSA 2048 takes ~100 ms each)
KEY_ARGS = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1']


class PkiUnavailable(Exception):
    """No openssl command to make certificates with."""


def _openssl(*args: str, cwd: Optional[str] = None) -> None:
    exe = shutil.which('openssl')
    if exe is None:
        raise PkiUnavailable('the openssl command is not installed (Debian '
                             'package openssl): no certificates for '
                             'migration TLS')
    out = subprocess.run([exe] + list(args), cwd=cwd,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         universal_newlines=True)
    if out.returncode:
        raise RuntimeError('openssl %s failed: %s'
                           % (' '.join(args[:2]), out.stderr.strip()))


class Pki:
    """A CA in *directory* (a fresh temporary one by default); ``host(uuid)``
    makes (once) and returns that host's certificate file."""

    def __init__(self, directory: Optional[str] = None,
                 name: str = 'nova-xen-stubdom test CA') -> None:
        self.dir = directory or tempfile.mkdtemp(prefix='nxs-pki-')
        self.ca = os.path.join(self.dir, 'ca.pem')
        self._ca_key = os.path.join(self.dir, 'ca.key')
        self._lock = threading.Lock()
        if not os.path.exists(self.ca):
            _openssl('req', '-x509', *KEY_ARGS, '-nodes', '-days', str(DAYS),
                     '-subj', '/CN=%s' % name, '-keyout', self._ca_key,
                     '-out', self.ca)
            os.chmod(self._ca_key, 0o600)

    def host(self, uuid: str) -> str:
        """``<uuid>.pem`` (key + certificate) signed by this CA."""
        path = os.path.join(self.dir, '%s.pem' % uuid)
        with self._lock:
            if os.path.exists(path):
                return path
            key = os.path.join(self.dir, '%s.key' % uuid)
            csr = os.path.join(self.dir, '%s.csr' % uuid)
            crt = os.path.join(self.dir, '%s.crt' % uuid)
            ext = os.path.join(self.dir, '%s.ext' % uuid)
            with open(ext, 'w') as f:
                f.write('subjectAltName = DNS:%s\n'
                        'basicConstraints = critical, CA:FALSE\n'
                        'keyUsage = critical, digitalSignature\n'
                        'extendedKeyUsage = serverAuth, clientAuth\n' % uuid)
            _openssl('req', *KEY_ARGS, '-nodes', '-subj', '/CN=%s' % uuid,
                     '-keyout', key, '-out', csr)
            _openssl('x509', '-req', '-in', csr, '-CA', self.ca, '-CAkey',
                     self._ca_key, '-CAcreateserial', '-days', str(DAYS),
                     '-extfile', ext, '-out', crt)
            with open(path + '.tmp', 'w') as out:
                for part in (key, crt):
                    with open(part) as f:
                        out.write(f.read())
            os.chmod(path + '.tmp', 0o600)
            os.rename(path + '.tmp', path)
            for part in (key, csr, crt, ext):
                os.unlink(part)
            return path

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
