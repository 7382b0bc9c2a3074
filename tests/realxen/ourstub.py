"""Host side of the stub-image scenarios (s1-ourstub.sh, s3-ourstub.sh,
s6-pcigrants.sh).

``overlay(dest, tb)`` adds to dom0's overlay:

- ``/opt/realxen/stubdom/``: OUR stub-domain image, built here by
  ``build-stubdom`` offline from the testbed (``--device-model testbed``:
  the testbed's QEMU 8.0.3, xenstore, vchan-socket-proxy, busybox, and its
  6.1.20 kernel, drivers built in, pre-XSA-482), with its manifest;
- ``/opt/realxen/s2-disk.img``: scenario 2's disk, 1 MiB: sector 0 the
  boot program of ``stub/readsector.S``, sector 1 a text with a token
  drawn for this run (:data:`DISK_TOKEN`), which the guest must print;
- ``/opt/realxen/xenopsd-dm``: what ``xl`` runs as the HVM guest's device
  model (``device_model_override``): it becomes our device-model wrapper
  with xenopsd's argv shape (``<domid> --syslog <QEMU arguments>``,
  xen-api ``device.ml`` ``Dm_Common.prepend_wrapper_args``).

The image is cached in ``build/realxen-stubdom`` (its inputs' cache too):
a rebuild with unchanged inputs costs a few seconds.
"""

import os
import secrets
import shutil
import subprocess
import tempfile

from tests.realxen import testbed

HERE = os.path.dirname(os.path.abspath(__file__))
#: drawn once per pytest session; the guest prints it (scenario 2)
DISK_TOKEN = secrets.token_hex(8)
DISK_BYTES = 1 << 20
#: the shim xl runs as device model (module doc)
DM_SHIM = """#!/bin/sh
# xl (libxl_dm.c libxl__spawn_local_dm) runs this as the guest's device
# model with libxl's QEMU arguments; xenopsd runs its wrapper with
# "<domid> --syslog <QEMU arguments>" (device.ml prepend_wrapper_args):
# prepend those and become our wrapper, as /etc/xenopsd.conf's
# upstream-compat-qemu-dm-wrapper would be.
d=; prev=
for a in "$@"; do [ "$prev" = -xen-domid ] && d=$a; prev=$a; done
export PYTHONPATH=/opt/realxen/pkg
. /etc/realxen/env  # RX_PYTHON: dom0's Python of our payload (dom0py.py)
exec "$RX_PYTHON" -m nova_xen_stubdom.dom0.dm_wrapper "$d" --syslog "$@"
"""


#: libxl's vif hotplug script here: this dom0 has no bridge and Xen's
#: /etc/xen/scripts is empty; libxl (run_hotplug_scripts) waits for it to
#: exit, and Linux's netback connects only once the script reported
#: hotplug-status "connected" (xen-netback xenbus.c hotplug_status_changed;
#: Xen's xen-hotplug-common.sh success())
VIF_SCRIPT = """#!/bin/sh
# no bridge in the realxen dom0: nothing to plug the vif into; report it
# up as Xen's vif-bridge does (xen-hotplug-common.sh success)
case "$1" in
  online|add) xenstore-write "$XENBUS_PATH/hotplug-status" connected ;;
esac
exit 0
"""


#: REALXEN_SKIP="s3-ourstub.sh ..." leaves scenarios out of a by-hand run
#: (tests/realxen/conftest.py); their tests report NOT RUN
SKIP_ENV = 'REALXEN_SKIP'


def skipped(script: str) -> bool:
    """True when REALXEN_SKIP names the scenario script."""
    return script in os.environ.get(SKIP_ENV, '').split()


def marker(boot, name: str):
    """The boot's marker *name*; a failed assertion with the serial log's
    last lines when dom0 never printed it."""
    m = boot.marker(name)
    assert m is not None, '%s not seen; %s; last serial lines:\n%s' % (
        name, boot.summary(), '\n'.join(boot.final.last_lines))
    return m


def unavailable() -> str:
    """Why the stub-image scenarios cannot be prepared here, or ''."""
    for tool in ('as', 'ld', 'strip', 'dpkg-deb', 'dpkg-query'):
        if shutil.which(tool) is None:
            return '%s not installed (binutils, dpkg)' % tool
    return ''


def build_image(tb: str, dest: str) -> str:
    """Our stub-domain image, offline from the testbed, into dest."""
    from nova_xen_stubdom.stubdom import builder
    cache = os.path.join(testbed.ROOT, 'build', 'realxen-stubdom')
    builder.build(dest, os.path.join(cache, 'cache'),
                  progress=lambda m: None, device_model='testbed',
                  testbed=tb)
    return dest


def boot_sector() -> bytes:
    with tempfile.TemporaryDirectory(prefix='rxstub-mbr.') as work:
        obj, out = os.path.join(work, 'mbr.o'), os.path.join(work, 'mbr')
        subprocess.run(['as', '--32', '-o', obj,
                        os.path.join(HERE, 'stub', 'readsector.S')],
                       check=True)
        subprocess.run(['ld', '-m', 'elf_i386', '-Ttext', '0x7c00',
                        '--oformat', 'binary', '-o', out, obj], check=True)
        with open(out, 'rb') as f:
            data = f.read()
    if len(data) != 512 or data[510:] != b'\x55\xaa':
        raise RuntimeError('readsector.S did not give a 512-byte boot sector')
    return data


def sector_text() -> bytes:
    return ('S2-SECTOR-1 token=%s\n' % DISK_TOKEN).encode() + b'\0'


def overlay(dest: str, tb: str) -> None:
    base = os.path.join(dest, 'opt', 'realxen')
    build_image(tb, os.path.join(base, 'stubdom'))
    disk = bytearray(DISK_BYTES)
    disk[0:512] = boot_sector()
    text = sector_text()
    disk[512:512 + len(text)] = text
    with open(os.path.join(base, 's2-disk.img'), 'wb') as f:
        f.write(bytes(disk))
    for name, text in (('xenopsd-dm', DM_SHIM), ('vif-noop', VIF_SCRIPT)):
        with open(os.path.join(base, name), 'w') as f:
            f.write(text)
        os.chmod(os.path.join(base, name), 0o755)
