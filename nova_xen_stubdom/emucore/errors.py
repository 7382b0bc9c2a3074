"""Exceptions of the stream reader and writer.

Like Xen's ``xen.migration.verify``: ``StreamError`` for framing (headers,
record boundaries, truncation, authentication) and ``RecordError`` for the
content of one record.  Both name the record type and the byte offset in the
stream, so an operator can find the spot with ``nova-xen-stubdom
inspect-stream``.
"""

from typing import Optional


class StreamError(Exception):
    """The stream is malformed, truncated or not what was expected."""

    def __init__(
        self,
        msg: str,
        offset: Optional[int] = None,
        rtype: Optional[int] = None,
        layer: Optional[str] = None,
    ):
        self.msg = msg
        self.offset = offset
        self.rtype = rtype
        self.layer = layer
        super().__init__(self._describe())

    @property
    def rtype_name(self) -> Optional[str]:
        if self.rtype is None:
            return None
        from nova_xen_stubdom.emucore import format as fmt

        return fmt.rec_type_to_str(self.layer or 'libxc', self.rtype)

    def _describe(self) -> str:
        where = []
        if self.rtype is not None:
            where.append(
                '%s record %s (0x%08x)'
                % (self.layer or 'libxc', self.rtype_name, self.rtype)
            )
        if self.offset is not None:
            where.append('at byte offset %d' % self.offset)
        return '%s%s' % (
            self.msg,
            (' [%s]' % ', '.join(where)) if where else '',
        )


class RecordError(StreamError):
    """One record's content is invalid (lengths, reserved fields, pfns...)."""


class AuthenticationError(StreamError):
    """Missing, unexpected, wrong-key or tampered authentication tag.

    Raised before anything covered by the failing tag is applied.
    """
