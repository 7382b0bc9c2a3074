"""Where XAPI lets a PV/PVH VM direct-boot its kernel and ramdisk from.

XAPI resolves ``PV_kernel``/``PV_ramdisk`` of a VM with an empty
``PV_bootloader`` when it builds the xenopsd VM description
(xapi-project/xen-api ``ocaml/xapi/xapi_xenops.ml``, ``builder_of_vm`` ->
``make_direct_boot_record`` -> ``kernel_path``):

* since v24.20 (``IH-507``): the path is resolved with ``realpath`` and must
  be a regular file under ``/var/lib/xcp/guest/``
  (``allowed_dom0_directories_for_boot_files``); otherwise VM.start fails
  with ``INVALID_VALUE [kernel|ramdisk, path, reason]``;
* up to v24.19 (XCP-ng 8.3 at release): ``is_boot_file_whitelisted``
  accepts a path starting with ``/boot/guest/`` or ``/var/lib/xcp/guest``
  and without ``..``; any other path is replaced by ``""`` (logged at debug
  level only), so the domain has no kernel and never boots.

The one directory both accept is ``/var/lib/xcp/guest/``: that is where the
driver's stub-domain image lives.  The simulator applies the newer, explicit
rule (the older one refuses a superset of paths, silently).  It has no dom0
file system, so it cannot check that the file exists and is regular; it
normalises the path as ``realpath`` would for a tree without symbolic links.
"""
import posixpath
from typing import Optional, Tuple

from nova_xen_stubdom.sim.errors import XapiError

#: ``allowed_dom0_directories_for_boot_files`` (v24.20 and later)
ALLOWED_DIRS = ('/var/lib/xcp/guest/',)


def _allowed_current(path: str) -> Optional[str]:
    """``kernel_path``: None when allowed, else the reason XAPI gives."""
    if not path.startswith('/'):
        return 'File does not exist'
    real = posixpath.normpath(path)
    if not any(real.startswith(d) for d in ALLOWED_DIRS):
        return ('Is not in any of the allowed kernel directories: [%s]'
                % '; '.join(ALLOWED_DIRS))
    return None


def resolve(name: str, path: str) -> str:
    """The path xenopsd is given for *name* (``kernel``/``ramdisk``), or
    ``INVALID_VALUE [name, path, reason]``."""
    reason = _allowed_current(path)
    if reason is not None:
        # XAPI raises INVALID_VALUE with three parameters here, one more
        # than the datamodel's [field, value]
        raise XapiError('INVALID_VALUE', name, path, reason)
    return posixpath.normpath(path)


def direct_boot_files(rec: dict) -> Optional[Tuple[str, str]]:
    """(kernel, ramdisk) for a direct-booting PV/PVH VM record, else None
    (HVM, or a bootloader): ``Helpers.boot_method_of_vm``."""
    if rec['PV_bootloader'] != '':
        return None
    kernel = resolve('kernel', rec['PV_kernel'])
    ramdisk = (resolve('ramdisk', rec['PV_ramdisk'])
               if rec['PV_ramdisk'] != '' else '')
    return kernel, ramdisk
