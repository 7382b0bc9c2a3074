"""Re-emit a parsed stream through our writer (interchange with Xen's tools).

``rewrite_stream`` reads a stream v2 -- ``xl save``'s (behind its header,
see ``xlsave``) or one of ours -- with ``StreamReader`` and writes the same
guest state with ``StreamWriter``: static data, every PAGE_DATA record (pfn
words and pages as read, XTAB entries included), TSC info, HVM params and
context, the emulator's xenstore data and device state.  What the reader
checked but the writer regenerates -- our optional CRC and authentication
records -- is dropped; the writer adds its own in full mode.

The source must be a buffer (bytes, mmap of a save file): it is verified
completely before the first byte is written, so a bad source leaves ``out``
untouched.  Page records of our full mode that need the guest memory to
decode (NX_ZERO_RUNS, NX_XBZRLE_PAGES) are refused: restore such a stream
into memory and write it with ``write_pages`` instead.
"""

import json
import struct
from typing import Any, BinaryIO, Optional

from nova_xen_stubdom.emucore import format as fmt
from nova_xen_stubdom.emucore.reader import RestoreResult
from nova_xen_stubdom.emucore.reader import StreamReader
from nova_xen_stubdom.emucore.writer import StreamWriter

_HVM_PARAMS_HEAD = struct.calcsize(fmt.HVM_PARAMS_FORMAT)
_EMU_HEAD = struct.calcsize(fmt.EMULATOR_HEADER_FORMAT)


def rewrite_stream(
    source: Any,
    out: BinaryIO,
    mode: str = 'compat',
    key: Optional[bytes] = None,
    source_key: Optional[bytes] = None,
    compat_xenstore: str = 'empty',
) -> RestoreResult:
    """Write source's guest state to out as a new stream; returns what the
    source carried (``RestoreResult`` of its verification).

    mode/key/compat_xenstore are ``StreamWriter``'s; source_key is the
    source's own HMAC key if it is an authenticated stream of ours.
    """
    if hasattr(source, 'read') and not hasattr(source, 'madvise'):
        raise ValueError(
            'rewrite_stream reads a buffer (bytes, mmap), not a file object: '
            'the source is verified before anything is written'
        )
    reader = StreamReader(source, key=source_key)
    info = reader.verify()
    if info.stats['zero_pages'] or info.stats['xbzrle_pages']:
        raise ValueError(
            'the source has NX_ZERO_RUNS/NX_XBZRLE_PAGES records, which '
            'decode only against guest memory: restore it and use '
            'write_pages'
        )
    writer = StreamWriter(
        out,
        mode=mode,
        key=key,
        domain_type=info.domain_type,
        xen_version=info.xen_version,
        compat_xenstore=compat_xenstore,
    )
    writer.write_header()
    cpuid = msr = b''
    for rec in reader.records():
        body = rec.body
        if rec.layer == 'libxc':
            _libxc(writer, rec.rtype, body, mode)
            if rec.rtype == fmt.REC_TYPE_X86_CPUID_POLICY:
                cpuid = bytes(body)
            elif rec.rtype == fmt.REC_TYPE_X86_MSR_POLICY:
                msr = bytes(body)
            elif rec.rtype == fmt.REC_TYPE_STATIC_DATA_END:
                writer.write_static_data(cpuid_policy=cpuid, msr_policy=msr)
        elif rec.rtype == fmt.LIBXL_REC_TYPE_EMULATOR_XENSTORE_DATA:
            emu_id, index = _emulator_header(body)
            data = bytes(body[_EMU_HEAD:])
            parts = data[:-1].split(b'\0') if data else []
            pairs = dict(
                (k.decode(), v.decode())
                for k, v in zip(parts[::2], parts[1::2])
            )
            writer.write_emulator_xenstore_data(pairs, emu_id, index)
        elif rec.rtype == fmt.LIBXL_REC_TYPE_EMULATOR_CONTEXT:
            emu_id, index = _emulator_header(body)
            writer.write_emulator_context(body[_EMU_HEAD:], emu_id, index)
        elif rec.rtype == fmt.LIBXL_REC_TYPE_END:
            writer.close()
        # LIBXC_CONTEXT: written by write_header; NX_AUTH_*: regenerated.
    return info


def _libxc(writer: StreamWriter, rtype: int, body: Any, mode: str) -> None:
    """The libxc records that map one-to-one onto a writer call."""
    if rtype == fmt.REC_TYPE_PAGE_DATA:
        (count,) = struct.unpack_from('<I', body)
        writer.write_page_data(
            body[8: 8 + 8 * count], body[8 + 8 * count:]
        )
    elif rtype == fmt.REC_TYPE_X86_TSC_INFO:
        mode_, khz, nsec, inc, _ = struct.unpack(fmt.X86_TSC_INFO_FORMAT, body)
        writer.write_tsc_info(mode_, khz, nsec, inc)
    elif rtype == fmt.REC_TYPE_HVM_PARAMS:
        writer.write_hvm_params(
            struct.iter_unpack(
                fmt.HVM_PARAMS_ENTRY_FORMAT, body[_HVM_PARAMS_HEAD:]
            )
        )
    elif rtype == fmt.REC_TYPE_HVM_CONTEXT:
        writer.write_hvm_context(body)
    elif rtype == fmt.REC_TYPE_END:
        writer.end_libxc()
    elif rtype == fmt.REC_TYPE_NX_DOMAIN_INFO and mode == 'full':
        writer.write_domain_info(json.loads(bytes(body).decode('utf-8')))
    # Static data is collected by the caller; VERIFY, our CRC/auth records
    # and unknown optional records are not carried over.


def _emulator_header(body: Any) -> Any:
    return struct.unpack_from(fmt.EMULATOR_HEADER_FORMAT, body)
