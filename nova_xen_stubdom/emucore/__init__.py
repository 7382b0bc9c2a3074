"""emucore: the native data plane of save, restore and live migration.

Turns guest memory (any buffer: the mmap of a domain's memory, a bytearray)
and device-model state into a Xen migration stream v2 and back.  The hot
loops are C (``nova_xen_stubdom._emucore``); this package is its API:

* ``StreamWriter`` / ``StreamReader`` - the stream (``writer``, ``reader``)
* ``StreamError`` / ``RecordError`` / ``AuthenticationError`` (``errors``)
* ``XbzrleCache``, ``xbzrle_encode``, ``xbzrle_decode`` - QEMU's XBZRLE
* ``is_zero``, ``zero_page_flags``, ``crc32c`` - kernels with run-time SIMD
* ``bitmap`` - dirty-bitmap walk/count/clear/merge
* ``format`` - record types and struct formats (spec names)
* ``rewrite_stream`` - re-emit a parsed stream through the writer, and
  ``xlsave`` - xl's save-file header (interchange with ``xl save/restore``)

Importing raises ImportError saying how to build the extension when it is
missing: there is no silent slow fallback (``reference`` is for tests).
See doc/source/emucore.rst for the format decisions.
"""

from nova_xen_stubdom.emucore import _native

_ec = _native.load()

from nova_xen_stubdom.emucore import bitmap  # noqa: E402
from nova_xen_stubdom.emucore import format  # noqa: E402,A004
from nova_xen_stubdom.emucore import xlsave  # noqa: E402
from nova_xen_stubdom.emucore.errors import AuthenticationError  # noqa: E402
from nova_xen_stubdom.emucore.errors import RecordError  # noqa: E402
from nova_xen_stubdom.emucore.errors import StreamError  # noqa: E402
from nova_xen_stubdom.emucore.format import DHDR_TYPE_X86_HVM  # noqa: E402
from nova_xen_stubdom.emucore.format import (  # noqa: E402
    EMULATOR_ID_QEMU_UPSTREAM,
)
from nova_xen_stubdom.emucore.reader import Record  # noqa: E402
from nova_xen_stubdom.emucore.reader import RestoreResult  # noqa: E402
from nova_xen_stubdom.emucore.reader import StreamReader  # noqa: E402
from nova_xen_stubdom.emucore.rewrite import rewrite_stream  # noqa: E402
from nova_xen_stubdom.emucore.writer import StreamWriter  # noqa: E402

XbzrleCache = _ec.XbzrleCache
FormatError = _ec.FormatError
is_zero = _ec.is_zero
zero_page_flags = _ec.zero_page_flags
crc32c = _ec.crc32c
xbzrle_encode = _ec.xbzrle_encode
xbzrle_decode = _ec.xbzrle_decode
accels = _ec.accels
PAGE_SIZE = _ec.PAGE_SIZE
MAX_BATCH = _ec.MAX_BATCH
#: only on Python < 3.8, which lacks memoryview.toreadonly()
readonly_memory = getattr(_ec, 'readonly_memory', None)

__all__ = [
    'AuthenticationError',
    'DHDR_TYPE_X86_HVM',
    'EMULATOR_ID_QEMU_UPSTREAM',
    'FormatError',
    'MAX_BATCH',
    'PAGE_SIZE',
    'Record',
    'RecordError',
    'RestoreResult',
    'StreamError',
    'StreamReader',
    'StreamWriter',
    'XbzrleCache',
    'accels',
    'bitmap',
    'crc32c',
    'format',
    'is_zero',
    'rewrite_stream',
    'xbzrle_decode',
    'xbzrle_encode',
    'xlsave',
    'zero_page_flags',
]
