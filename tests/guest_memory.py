"""What a moved guest's memory is compared by."""
import hashlib

from nova_xen_stubdom.dom0 import saverestore


def digest(memory, hvm_params) -> str:
    """SHA-256 of guest memory but the xenstore ring and ioreq pages that
    *hvm_params* name: a restore zeroes those, as libxc's does
    (saverestore.clear_special_pages)."""
    mem = bytearray(memory)
    saverestore.clear_special_pages(mem, hvm_params)
    return hashlib.sha256(mem).hexdigest()
