"""``nova-xen-stubdom build-dom0 --output DIR``: the dom0 package.

Builds ``nova-xen-stubdom-dom0-<version>.tar.gz``: the dom0 payload
(``nova_xen_stubdom/dom0``, the emucore Python API and ``_emucore`` built
for dom0's CPython 3.6), the XAPI plugin launcher, the daemon's systemd
unit, the device-model wrapper launcher, a commented ``agent.conf``, the
stub domain image when one is given, and ``install.sh`` (a POSIX shell
script for hosts without rpm; ``DESTDIR=/scratch`` installs into a scratch
root, ``--uninstall`` removes what it installed).

Files installed (relative to the root)::

    usr/lib/nova-xen-stubdom/python/nova_xen_stubdom/...   the payload
    etc/xapi.d/plugins/nova_xen_stubdom                     XAPI plugin
    usr/lib/systemd/system/nova-xen-stubdom-agent.service   the daemon
    usr/libexec/nova-xen-stubdom/dm-wrapper                 the wrapper
    etc/nova-xen-stubdom/agent.conf                         (kept if there)
    boot/guest/nova-xen-stubdom-kernel, -rootfs.cpio.gz     (--stubdom-dir)

Not done here (yet): the RPM, and registering the wrapper in
``/etc/xenopsd.conf`` -- the wrapper does not yet hand VMs it does not
manage to the host's stock wrapper, so it must not become the host-wide
device model (see doc/source/install.rst).
"""
import argparse
import glob
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from typing import List, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
PKG = os.path.join(ROOT, 'nova_xen_stubdom')
LIBDIR = 'usr/lib/nova-xen-stubdom/python'

PLUGIN = '''#!/usr/bin/python3
# nova-xen-stubdom XAPI host plugin: forwards each host.call_plugin to the
# dom0 daemon (nova-xen-stubdom-agent.service).
import sys
sys.path.insert(0, '/%s')
from nova_xen_stubdom.dom0 import xapi_plugin  # noqa: E402
if __name__ == '__main__':
    sys.exit(xapi_plugin.main())
''' % LIBDIR

WRAPPER = '''#!/usr/bin/python3
# nova-xen-stubdom device-model wrapper (see dom0/dm_wrapper.py)
import sys
sys.path.insert(0, '/%s')
from nova_xen_stubdom.dom0 import dm_wrapper  # noqa: E402
if __name__ == '__main__':
    sys.exit(dm_wrapper.main())
''' % LIBDIR

AGENT_CONF = '''# nova-xen-stubdom dom0 agent (daemon, plugin, wrapper);
# every key is optional, the values shown are the defaults.
[agent]
# hypervisor backend: xen
#backend = xen
# QEMU in dom0 for a guest without a stub domain: refused unless true
#allow_dom0_device_model = false
# the dom0 QEMU (used only when allowed) and how long the wrapper waits for
# the stub domain's QEMU to report "running"
#dom0_qemu = /usr/lib64/xen/bin/qemu-system-i386
#dm_start_timeout = 60
# the daemon's socket (root only) and state directory
#socket_path = /run/nova-xen-stubdom/agent.sock
#state_dir = /var/lib/nova-xen-stubdom
# defaults for migration calls that do not carry their own values (the
# driver passes the host's management address to listen on; loopback and
# 0.0.0.0 are refused)
#agent_listen_address =
#agent_port_min = 49500
#agent_port_max = 49599
# migration streams run over TLS: this host's certificate (with its key,
# unless migration_tls_key names it) and the peers' trusted bundle; the
# defaults are XAPI's pool certificate and pool bundle
#migration_tls_cert = /etc/xensource/xapi-pool-tls.pem
#migration_tls_key =
#migration_tls_ca = /etc/stunnel/xapi-pool-ca-bundle.pem
# auto: TLS 1.3 where dom0's OpenSSL has it, else TLS 1.2 with ECDHE and
# AEAD ciphers only; 1.2 also talks to a host without TLS 1.3
#migration_tls_version = auto
# the receiver: seconds a connection gets for its TLS and key handshakes,
# handshakes at once (the oldest is dropped for a newer one)
#migration_handshake_timeout = 10
#migration_max_pending = 8
# loopback listen addresses: tests and the simulator only
#migration_allow_loopback = false
'''

INSTALL = r'''#!/bin/sh
# Install (or --uninstall) the nova-xen-stubdom dom0 package.
#   DESTDIR=/scratch ./install.sh      install into a scratch root
# Afterwards on a host: systemctl daemon-reload &&
#   systemctl enable --now nova-xen-stubdom-agent
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=${DESTDIR:-/}
manifest=$root/var/lib/nova-xen-stubdom/installed-files
if [ "${1:-}" = "--uninstall" ]; then
    [ -f "$manifest" ] || { echo "not installed in $root" >&2; exit 1; }
    while read -r f; do rm -f "$root/$f"; done < "$manifest"
    rm -rf "$root/__LIBDIR__" "$root/usr/libexec/nova-xen-stubdom"
    rm -f "$manifest"
    echo "nova-xen-stubdom dom0 package removed from $root"
    exit 0
fi
mkdir -p "$root/var/lib/nova-xen-stubdom"
: > "$manifest.new"
put() {  # put MODE SRC DEST
    install -D -m "$1" "$here/files/$2" "$root/$3"
    echo "$3" >> "$manifest.new"
}
cd "$here/files"
find lib -type f | sort | while read -r f; do
    put 0644 "$f" "__LIBDIR__/${f#lib/}"
done
put 0755 plugin etc/xapi.d/plugins/nova_xen_stubdom
put 0644 nova-xen-stubdom-agent.service \
    usr/lib/systemd/system/nova-xen-stubdom-agent.service
put 0755 dm-wrapper usr/libexec/nova-xen-stubdom/dm-wrapper
if [ ! -f "$root/etc/nova-xen-stubdom/agent.conf" ]; then
    put 0644 agent.conf etc/nova-xen-stubdom/agent.conf
fi
for f in boot/*; do
    if [ -f "$f" ]; then put 0644 "$f" "boot/guest/${f#boot/}"; fi
done
mv "$manifest.new" "$manifest"
echo "nova-xen-stubdom dom0 package installed into $root"
'''


def _version() -> str:
    try:
        out = subprocess.run(['git', 'describe', '--always', '--dirty'],
                             cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL,
                             universal_newlines=True, timeout=30)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return 'unknown'


def _find_python36(explicit: Optional[str]) -> str:
    for c in [explicit, os.environ.get('PYTHON36')] + sorted(glob.glob(
            os.path.expanduser('~/.pyenv/versions/3.6*/bin/python3.6'))) + [
            shutil.which('python3.6')]:
        if c and os.access(c, os.X_OK):
            return c
    raise SystemExit('build-dom0: no Python 3.6 to build _emucore for dom0 '
                     '(--python36 or $PYTHON36)')


def _copy_payload(dest: str) -> None:
    lib = os.path.join(dest, 'nova_xen_stubdom')
    os.makedirs(os.path.join(lib, 'dom0'))
    os.makedirs(os.path.join(lib, 'emucore'))
    shutil.copy(os.path.join(PKG, '__init__.py'), lib)
    for sub in ('dom0', 'emucore'):
        for f in sorted(glob.glob(os.path.join(PKG, sub, '*.py'))):
            shutil.copy(f, os.path.join(lib, sub))


def _build_emucore(python36: str, dest: str, work: str) -> str:
    out = subprocess.run(
        [python36, os.path.join(ROOT, 'tools', 'dom0', 'build_emucore.py'),
         '--check', work], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        universal_newlines=True, timeout=900)
    built = glob.glob(os.path.join(work, 'nova_xen_stubdom', '_emucore*.so'))
    if out.returncode != 0 or len(built) != 1:
        raise SystemExit('build-dom0: _emucore did not build for %s:\n%s'
                         % (python36, out.stdout[-4000:]))
    target = os.path.join(dest, 'nova_xen_stubdom',
                          os.path.basename(built[0]))
    shutil.copy(built[0], target)
    return target


def _write(path: str, text: str, mode: int = 0o644) -> None:
    with open(path, 'w') as f:
        f.write(text)
    os.chmod(path, mode)


def build(output: str, python36: Optional[str] = None,
          stubdom_dir: Optional[str] = None) -> str:
    """Build the tarball into *output*; its path."""
    version = _version()
    name = 'nova-xen-stubdom-dom0-%s' % version
    os.makedirs(output, exist_ok=True)
    work = tempfile.mkdtemp(prefix='nxs-build-dom0-')
    try:
        top = os.path.join(work, name)
        files = os.path.join(top, 'files')
        os.makedirs(os.path.join(files, 'boot'))
        _copy_payload(os.path.join(files, 'lib'))
        _build_emucore(_find_python36(python36), os.path.join(files, 'lib'),
                       os.path.join(work, 'emucore'))
        _write(os.path.join(files, 'plugin'), PLUGIN, 0o755)
        _write(os.path.join(files, 'dm-wrapper'), WRAPPER, 0o755)
        _write(os.path.join(files, 'agent.conf'), AGENT_CONF)
        with open(os.path.join(ROOT, 'devstack', 'files',
                               'nova-xen-stubdom-agent.service')) as f:
            unit = f.read().replace(
                '[Service]\n', '[Service]\nEnvironment=PYTHONPATH=/%s\n'
                % LIBDIR)
        _write(os.path.join(files, 'nova-xen-stubdom-agent.service'), unit)
        if stubdom_dir:
            for f in ('nova-xen-stubdom-kernel',
                      'nova-xen-stubdom-rootfs.cpio.gz'):
                shutil.copy(os.path.join(stubdom_dir, f),
                            os.path.join(files, 'boot'))
        _write(os.path.join(top, 'install.sh'),
               INSTALL.replace('__LIBDIR__', LIBDIR), 0o755)
        tarball = os.path.join(output, name + '.tar.gz')
        with tarfile.open(tarball, 'w:gz') as tar:
            tar.add(top, arcname=name)
        with open(tarball, 'rb') as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        _write(tarball + '.sha256', '%s  %s\n' % (
            digest, os.path.basename(tarball)))
        return tarball
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog='nova-xen-stubdom build-dom0',
                                description=__doc__.split('\n\n')[0])
    p.add_argument('--output', required=True)
    p.add_argument('--python36', help='the CPython 3.6 to build _emucore '
                   'with (default: $PYTHON36, pyenv 3.6, python3.6)')
    p.add_argument('--stubdom-dir', help='output of build-stubdom, to ship '
                   'the stub domain kernel and rootfs')
    opts = p.parse_args(list(argv) if argv is not None else None)
    print(build(opts.output, opts.python36, opts.stubdom_dir))
    return 0


def files_in(tarball: str) -> List[str]:
    with tarfile.open(tarball) as tar:
        return sorted(m.name for m in tar.getmembers() if m.isfile())


if __name__ == '__main__':
    sys.exit(main())
