"""Constants and struct formats of the Xen migration stream v2.

Records as per Xen's docs/specs/libxl-migration-stream.pandoc (libxl
"LibxlFmt" v2) and docs/specs/libxc-migration-stream.pandoc (libxc "XENF"
v3), plus our optional records (type bit 31).  The C side has the same
numbers in ``emucore/include/emucore_stream.h``; tests/native checks both
agree and that every ``*_FORMAT`` has the size the spec states.
"""

import struct

# ---- common record header (both layers, little endian) ----------------
RH_FORMAT = '<II'  # type, length (body, without padding)
REC_TYPE_OPTIONAL = 0x80000000

# ---- libxl layer -------------------------------------------------------
LIBXL_HDR_FORMAT = '>QII'  # ident, version, options (big endian)
LIBXL_HDR_IDENT = 0x4C6962786C466D74  # "LibxlFmt"
LIBXL_HDR_VERSION = 2
LIBXL_HDR_OPT_BE = 1 << 0
LIBXL_HDR_OPT_LEGACY = 1 << 1
LIBXL_HDR_OPT_RESZ_MASK = 0xFFFFFFFC

LIBXL_REC_TYPE_END = 0x00000000
LIBXL_REC_TYPE_LIBXC_CONTEXT = 0x00000001
LIBXL_REC_TYPE_EMULATOR_XENSTORE_DATA = 0x00000002
LIBXL_REC_TYPE_EMULATOR_CONTEXT = 0x00000003
LIBXL_REC_TYPE_CHECKPOINT_END = 0x00000004
LIBXL_REC_TYPE_CHECKPOINT_STATE = 0x00000005

EMULATOR_HEADER_FORMAT = '<II'  # emulator id, index
EMULATOR_ID_UNKNOWN = 0
EMULATOR_ID_QEMU_TRAD = 1
EMULATOR_ID_QEMU_UPSTREAM = 2

# ---- libxc layer -------------------------------------------------------
IHDR_FORMAT = '>QIIHHI'  # marker, id, version, options, res1, res2
IHDR_MARKER = 0xFFFFFFFFFFFFFFFF
IHDR_IDENT = 0x58454E46  # "XENF"
IHDR_VERSION = 3
IHDR_OPT_BE = 1 << 0

DHDR_FORMAT = '<IHHII'  # type, page_shift, res1, major, minor
DHDR_TYPE_X86_PV = 1
DHDR_TYPE_X86_HVM = 2
DHDR_TYPE_X86_PVH = 3
DHDR_TYPE_ARM = 4

REC_TYPE_END = 0x00000000
REC_TYPE_PAGE_DATA = 0x00000001
REC_TYPE_X86_PV_INFO = 0x00000002
REC_TYPE_X86_PV_P2M_FRAMES = 0x00000003
REC_TYPE_X86_PV_VCPU_BASIC = 0x00000004
REC_TYPE_X86_PV_VCPU_EXTENDED = 0x00000005
REC_TYPE_X86_PV_VCPU_XSAVE = 0x00000006
REC_TYPE_SHARED_INFO = 0x00000007
REC_TYPE_X86_TSC_INFO = 0x00000008
REC_TYPE_HVM_CONTEXT = 0x00000009
REC_TYPE_HVM_PARAMS = 0x0000000A
REC_TYPE_TOOLSTACK = 0x0000000B
REC_TYPE_X86_PV_VCPU_MSRS = 0x0000000C
REC_TYPE_VERIFY = 0x0000000D
REC_TYPE_CHECKPOINT = 0x0000000E
REC_TYPE_CHECKPOINT_DIRTY_PFN_LIST = 0x0000000F
REC_TYPE_STATIC_DATA_END = 0x00000010
REC_TYPE_X86_CPUID_POLICY = 0x00000011
REC_TYPE_X86_MSR_POLICY = 0x00000012

PAGE_DATA_FORMAT = '<II'  # count, reserved
PAGE_DATA_PFN_MASK = (1 << 52) - 1
PAGE_DATA_TYPE_SHIFT = 60
HVM_PARAMS_FORMAT = '<II'  # count, reserved
HVM_PARAMS_ENTRY_FORMAT = '<QQ'  # index, value
X86_TSC_INFO_FORMAT = '<IIQII'  # mode, khz, nsec, incarnation, reserved
X86_CPUID_POLICY_ENTRY_FORMAT = '<IIIIII'  # leaf, subleaf, a, b, c, d
X86_MSR_POLICY_ENTRY_FORMAT = '<IIQ'  # idx, flags, value (xen_msr_entry_t)

# ---- our optional records ("NX" marker 0x4e in bits 8..15) -------------
REC_TYPE_NX_ZERO_RUNS = 0x80004E01
REC_TYPE_NX_XBZRLE_PAGES = 0x80004E02
REC_TYPE_NX_BATCH_CRC32C = 0x80004E03
REC_TYPE_NX_AUTH_INIT = 0x80004E10
REC_TYPE_NX_AUTH_TAG = 0x80004E11
#: JSON object describing the domain (libxc layer, before STATIC_DATA_END)
REC_TYPE_NX_DOMAIN_INFO = 0x80004E20
DOMAIN_INFO_MAX = 65536

ZERO_RUNS_FORMAT = '<II'  # count, reserved
ZERO_RUN_ENTRY_FORMAT = '<QQ'  # start pfn, pages
XBZRLE_PAGES_FORMAT = '<II'  # count, reserved (+ pfns, u16 lengths, pad, data)
BATCH_CRC32C_FORMAT = '<II'  # crc32c, bytes covered
AUTH_INIT_FORMAT = '<II16s'  # alg, flags, stream id
AUTH_TAG_HEAD_FORMAT = '<II'  # seq, flags (MAC'd)
AUTH_TAG_FORMAT = '<II32s'  # seq, flags, HMAC-SHA256
AUTH_ALG_HMAC_SHA256 = 1
#: no tag in the stream: its transport (TLS, an AEAD cipher) authenticates
#: every byte; AUTH_TAGs still mark segments (tag bytes zero).  A reader
#: accepts it only when told its source is such a channel.
AUTH_ALG_CHANNEL = 2
AUTH_TAG_FLAG_FINAL = 1

PAGE_SIZE = 4096
MAX_BATCH = 1024

_LIBXL_NAMES = {
    LIBXL_REC_TYPE_END: 'END',
    LIBXL_REC_TYPE_LIBXC_CONTEXT: 'LIBXC_CONTEXT',
    LIBXL_REC_TYPE_EMULATOR_XENSTORE_DATA: 'EMULATOR_XENSTORE_DATA',
    LIBXL_REC_TYPE_EMULATOR_CONTEXT: 'EMULATOR_CONTEXT',
    LIBXL_REC_TYPE_CHECKPOINT_END: 'CHECKPOINT_END',
    LIBXL_REC_TYPE_CHECKPOINT_STATE: 'CHECKPOINT_STATE',
}
_LIBXC_NAMES = {
    REC_TYPE_END: 'END',
    REC_TYPE_PAGE_DATA: 'PAGE_DATA',
    REC_TYPE_X86_PV_INFO: 'X86_PV_INFO',
    REC_TYPE_X86_PV_P2M_FRAMES: 'X86_PV_P2M_FRAMES',
    REC_TYPE_X86_PV_VCPU_BASIC: 'X86_PV_VCPU_BASIC',
    REC_TYPE_X86_PV_VCPU_EXTENDED: 'X86_PV_VCPU_EXTENDED',
    REC_TYPE_X86_PV_VCPU_XSAVE: 'X86_PV_VCPU_XSAVE',
    REC_TYPE_SHARED_INFO: 'SHARED_INFO',
    REC_TYPE_X86_TSC_INFO: 'X86_TSC_INFO',
    REC_TYPE_HVM_CONTEXT: 'HVM_CONTEXT',
    REC_TYPE_HVM_PARAMS: 'HVM_PARAMS',
    REC_TYPE_TOOLSTACK: 'TOOLSTACK',
    REC_TYPE_X86_PV_VCPU_MSRS: 'X86_PV_VCPU_MSRS',
    REC_TYPE_VERIFY: 'VERIFY',
    REC_TYPE_CHECKPOINT: 'CHECKPOINT',
    REC_TYPE_CHECKPOINT_DIRTY_PFN_LIST: 'CHECKPOINT_DIRTY_PFN_LIST',
    REC_TYPE_STATIC_DATA_END: 'STATIC_DATA_END',
    REC_TYPE_X86_CPUID_POLICY: 'X86_CPUID_POLICY',
    REC_TYPE_X86_MSR_POLICY: 'X86_MSR_POLICY',
}
_NX_NAMES = {
    REC_TYPE_NX_ZERO_RUNS: 'NX_ZERO_RUNS',
    REC_TYPE_NX_XBZRLE_PAGES: 'NX_XBZRLE_PAGES',
    REC_TYPE_NX_BATCH_CRC32C: 'NX_BATCH_CRC32C',
    REC_TYPE_NX_AUTH_INIT: 'NX_AUTH_INIT',
    REC_TYPE_NX_AUTH_TAG: 'NX_AUTH_TAG',
    REC_TYPE_NX_DOMAIN_INFO: 'NX_DOMAIN_INFO',
}

# Sizes the specs (and emucore_stream.h) state, checked by tests/native.
SPEC_SIZES = {
    'RH_FORMAT': 8,
    'LIBXL_HDR_FORMAT': 16,
    'EMULATOR_HEADER_FORMAT': 8,
    'IHDR_FORMAT': 24,
    'DHDR_FORMAT': 16,
    'PAGE_DATA_FORMAT': 8,
    'HVM_PARAMS_FORMAT': 8,
    'HVM_PARAMS_ENTRY_FORMAT': 16,
    'X86_TSC_INFO_FORMAT': 24,
    'X86_CPUID_POLICY_ENTRY_FORMAT': 24,
    'X86_MSR_POLICY_ENTRY_FORMAT': 16,
    'ZERO_RUNS_FORMAT': 8,
    'ZERO_RUN_ENTRY_FORMAT': 16,
    'XBZRLE_PAGES_FORMAT': 8,
    'BATCH_CRC32C_FORMAT': 8,
    'AUTH_INIT_FORMAT': 24,
    'AUTH_TAG_HEAD_FORMAT': 8,
    'AUTH_TAG_FORMAT': 40,
}


def rec_type_to_str(layer: str, rtype: int) -> str:
    """Name of record type rtype in layer ('libxl' or 'libxc')."""
    if rtype in _NX_NAMES:
        return _NX_NAMES[rtype]
    names = _LIBXL_NAMES if layer == 'libxl' else _LIBXC_NAMES
    if rtype in names:
        return names[rtype]
    if rtype & REC_TYPE_OPTIONAL:
        return 'optional 0x%08x' % rtype
    return 'unknown 0x%08x' % rtype


def padded(length: int) -> int:
    """Length rounded up to the 8-byte record alignment."""
    return (length + 7) & ~7


def calcsize(name: str) -> int:
    return struct.calcsize(globals()[name])
