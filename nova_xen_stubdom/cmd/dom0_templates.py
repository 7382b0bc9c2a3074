"""The small files of the dom0 package that are not the payload itself:
launchers, the commented ``agent.conf`` and the tarball's ``install.sh``.

``LIBDIR`` is where the payload (``nova_xen_stubdom/dom0``, the emucore
API, ``_emucore`` for CPython 3.6) is installed; dom0's ``python3`` does
not look there by itself, so each launcher puts it on ``sys.path``.
"""

LIBDIR = 'usr/lib/nova-xen-stubdom/python'
LIBEXEC = 'usr/libexec/nova-xen-stubdom'

_LAUNCHER = '''#!/usr/bin/python3
# nova-xen-stubdom %(what)s (see nova_xen_stubdom/dom0/%(module)s.py)
import sys
sys.path.insert(0, '/%(libdir)s')
from nova_xen_stubdom.dom0 import %(module)s  # noqa: E402
if __name__ == '__main__':
    sys.exit(%(module)s.main())
'''

#: XAPI runs /etc/xapi.d/plugins/nova_xen_stubdom as a fresh process per
#: host.call_plugin; it forwards the call to the daemon
PLUGIN = _LAUNCHER % {'what': 'XAPI host plugin: forwards each '
                      'host.call_plugin to the dom0 daemon',
                      'module': 'xapi_plugin', 'libdir': LIBDIR}

#: what xenopsd runs as every HVM guest's device model
WRAPPER = _LAUNCHER % {'what': 'device-model wrapper',
                       'module': 'dm_wrapper', 'libdir': LIBDIR}

#: the host steps of install and uninstall, shared by install.sh and the
#: RPM scriptlets; it acts on the root it is installed in, so its library
#: is found relative to itself (a scratch root works like /)
SETUP = '''#!/usr/bin/python3
# nova-xen-stubdom dom0-setup install|uninstall|status: register the
# device-model wrapper in /etc/xenopsd.conf and enable the daemon, or undo
# it (see nova_xen_stubdom/dom0/host_install.py)
import os
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)),
                                '..', '..', 'lib', 'nova-xen-stubdom',
                                'python'))
from nova_xen_stubdom.dom0 import host_install  # noqa: E402
if __name__ == '__main__':
    sys.exit(host_install.main(launcher=__file__))
'''

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
# the host's own device-model wrapper, run (argv unchanged) for VMs that
# nova-xen-stubdom does not manage: the installer sets it to what
# /etc/xenopsd.conf named before it registered ours
#stock_dm_wrapper =
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
# the stub-domain image's build manifest (build-dom0 --stubdom-dir puts it
# beside the image): the driver reads what its QEMU lacks through the
# agent and offers no PCI pass-through when that is xen-pci-passthrough
#stubdom_manifest = /var/lib/xcp/guest/nova-xen-stubdom-manifest.json
'''

INSTALL = r'''#!/bin/sh
# Install (or --uninstall) the nova-xen-stubdom dom0 package on a host
# without rpm (with rpm: the .rpm of the same build).
#   ./install.sh                       install into /
#   DESTDIR=/scratch ./install.sh      install into a scratch root
#   PYTHON3=/path/to/python3.6         the dom0 Python (default python3)
# The host steps (xenopsd.conf, agent.conf, the unit) are dom0-setup's,
# the same the RPM's scriptlets run.  Afterwards: systemctl restart
# xenopsd-xc, so that xenopsd runs the registered device-model wrapper.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=${DESTDIR:-/}
py=${PYTHON3:-python3}
setup=$root/__LIBEXEC__/dom0-setup
manifest=$root/var/lib/nova-xen-stubdom/install/installed-files
if [ "${1:-}" = "--uninstall" ]; then
    [ -f "$manifest" ] || { echo "not installed in $root" >&2; exit 1; }
    "$py" "$setup" uninstall
    while read -r f; do rm -f "$root/$f"; done < "$manifest"
    rm -f "$manifest"
    rm -rf "$root/__LIBDIR__" "$root/__LIBEXEC__"
    rmdir "$root/var/lib/nova-xen-stubdom/install" 2>/dev/null || :
    echo "nova-xen-stubdom dom0 package removed from $root"
    exit 0
fi
if [ -f "$manifest" ]; then
    echo "already installed in $root: $0 --uninstall first" >&2
    exit 1
fi
mkdir -p "$root/var/lib/nova-xen-stubdom/install"
chmod 0700 "$root/var/lib/nova-xen-stubdom"
: > "$manifest.new"
rollback() {
    while read -r f; do rm -f "$root/$f"; done < "$manifest.new"
    rm -f "$manifest.new"
    rm -rf "$root/__LIBDIR__" "$root/__LIBEXEC__"
    echo "install failed: the files copied were removed again" >&2
    exit 1
}
cd "$here/files"
for f in $(find . -type f | sort); do
    f=${f#./}
    if [ "$f" = etc/nova-xen-stubdom/agent.conf ] && [ -f "$root/$f" ]; then
        continue        # the operator's own is kept
    fi
    mode=0644
    if [ -x "$f" ]; then mode=0755; fi
    install -D -p -m "$mode" "$f" "$root/$f" || rollback
    echo "$f" >> "$manifest.new"
done
"$py" "$setup" install || rollback
mv "$manifest.new" "$manifest"
echo "nova-xen-stubdom dom0 package installed into $root"
'''


def install_sh() -> str:
    return INSTALL.replace('__LIBDIR__', LIBDIR).replace(
        '__LIBEXEC__', LIBEXEC)
