"""xl's save-file header: what ``xl save`` puts before the libxl stream.

``xl save`` (Xen tools/xl/xl_saverestore.c, save_domain_core_writeconfig)
writes ``struct save_file_header`` (tools/xl/xl.h): a 32-byte magic, the
byte-order word 0x01020304 in the host's order, ``mandatory_flags``
(STREAMv2 | JSON), ``optional_flags`` and ``optional_data_len``; then the
optional data, a 4-byte config length followed by the domain configuration
(libxl's JSON ``libxl_domain_config``, NUL-terminated).  The libxl stream v2
follows.  ``xl restore`` (tools/xl/xl_create.c, create_domain) refuses a
wrong magic or byte order and any mandatory flag it does not know, then
parses the config from the file unless one is given on its command line.

A save file is therefore ``build_header(config) + stream``; ``parse_header``
reads the header back and says where the stream starts.  x86 only: the
byte-order word is read and written little endian.
"""

import json
import struct
from typing import Any, Dict, Optional

from nova_xen_stubdom.emucore.errors import StreamError

MAGIC = b'Xen saved domain, xl format\n \0 \r'
BYTEORDER = 0x01020304
#: the libxl domain configuration is JSON (else xl's config-file syntax)
FLAG_JSON = 1 << 0
#: the stream after the header is a libxl migration stream v2
FLAG_STREAMV2 = 1 << 1
KNOWN_FLAGS = FLAG_JSON | FLAG_STREAMV2
HEADER_FORMAT = '<32sIIII'  # magic, byteorder, mandatory, optional, optlen
HEADER_SIZE = struct.calcsize(HEADER_FORMAT)
#: bound on the optional data read from an untrusted file
MAX_OPTIONAL_DATA = 1 << 20


class XlSaveHeader:
    """A parsed header: flags, the config it carries, where the stream is."""

    __slots__ = ('mandatory_flags', 'optional_flags', 'config', 'length')

    def __init__(
        self,
        mandatory_flags: int,
        optional_flags: int,
        config: Optional[bytes],
        length: int,
    ):
        self.mandatory_flags = mandatory_flags
        self.optional_flags = optional_flags
        #: the domain configuration without its trailing NUL, or None
        self.config = config
        #: header bytes; the libxl stream starts at this offset
        self.length = length

    @property
    def json(self) -> bool:
        return bool(self.mandatory_flags & FLAG_JSON)

    def config_json(self) -> Dict[str, Any]:
        """The libxl domain configuration as a dict (JSON configs only)."""
        if self.config is None or not self.json:
            raise ValueError('the save file carries no JSON configuration')
        return json.loads(self.config.decode('utf-8'))


def build_header(config: bytes, config_is_json: bool = True) -> bytes:
    """The header xl writes before a stream v2 with this domain config.

    config: libxl's JSON domain configuration (``config_is_json``) or an xl
    config file's text; a trailing NUL is added as xl does (strlen + 1).
    """
    if not isinstance(config, (bytes, bytearray)):
        raise TypeError('config must be bytes')
    config = bytes(config)
    if b'\0' in config.rstrip(b'\0'):
        raise ValueError('config contains a NUL byte')
    if config_is_json:
        try:
            json.loads(config.rstrip(b'\0').decode('utf-8'))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ValueError('config is not JSON: %s' % exc) from None
    data = config.rstrip(b'\0') + b'\0'
    optional = struct.pack('<I', len(data)) + data
    if len(optional) > MAX_OPTIONAL_DATA:
        raise ValueError(
            'config of %d bytes exceeds %d' % (len(data), MAX_OPTIONAL_DATA)
        )
    flags = FLAG_STREAMV2 | (FLAG_JSON if config_is_json else 0)
    return (
        struct.pack(HEADER_FORMAT, MAGIC, BYTEORDER, flags, 0, len(optional))
        + optional
    )


def parse_header(buf: Any) -> XlSaveHeader:
    """Read xl's header from the start of buf (bytes, mmap, memoryview).

    Refuses what ``xl restore`` refuses (magic, byte order, unknown
    mandatory flags, truncated optional data) and, because our reader reads
    only stream v2, a legacy (v1) save file.
    """
    mv = memoryview(buf).cast('B')
    if len(mv) < HEADER_SIZE:
        raise StreamError(
            'not an xl save file: %d bytes, the header needs %d'
            % (len(mv), HEADER_SIZE),
            offset=0,
        )
    magic, order, mandatory, optional, optlen = struct.unpack(
        HEADER_FORMAT, mv[:HEADER_SIZE]
    )
    if magic != MAGIC:
        raise StreamError('not an xl save file (wrong magic)', offset=0)
    if order != BYTEORDER:
        raise StreamError(
            'xl save file byte order word 0x%08x, expected 0x%08x '
            '(written on a big-endian host?)' % (order, BYTEORDER),
            offset=32,
        )
    if mandatory & ~KNOWN_FLAGS:
        raise StreamError(
            'xl save file has unknown mandatory flag(s) 0x%x'
            % (mandatory & ~KNOWN_FLAGS),
            offset=36,
        )
    if not mandatory & FLAG_STREAMV2:
        raise StreamError(
            'legacy (v1) xl save file: only migration stream v2 is read',
            offset=36,
        )
    if optlen > MAX_OPTIONAL_DATA:
        raise StreamError(
            'xl save file optional data of %d bytes exceeds %d'
            % (optlen, MAX_OPTIONAL_DATA),
            offset=44,
        )
    if len(mv) < HEADER_SIZE + optlen:
        raise StreamError(
            'xl save file truncated in its optional data', offset=HEADER_SIZE
        )
    config = None
    if optlen:
        # xl_create.c: a 4-byte length, then that many bytes of config.
        if optlen < 4:
            raise StreamError(
                'xl save file optional data of %d bytes has no config length'
                % optlen,
                offset=HEADER_SIZE,
            )
        (clen,) = struct.unpack('<I', mv[HEADER_SIZE: HEADER_SIZE + 4])
        if clen > optlen - 4:
            raise StreamError(
                'xl save file config length %d exceeds the optional data '
                '(%d bytes)' % (clen, optlen - 4),
                offset=HEADER_SIZE,
            )
        config = bytes(mv[HEADER_SIZE + 4: HEADER_SIZE + 4 + clen])
        if mandatory & FLAG_JSON and not config.endswith(b'\0'):
            raise StreamError(
                'xl save file JSON config is not NUL-terminated',
                offset=HEADER_SIZE + 4,
            )
        config = config[:-1] if config.endswith(b'\0') else config
    return XlSaveHeader(mandatory, optional, config, HEADER_SIZE + optlen)
