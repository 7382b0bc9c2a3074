"""XAPI failures as the simulator raises them.

An :class:`XapiError` carries the wire name and its parameters exactly as
XAPI puts them in ``ErrorDescription``; parameters are stringified.
"""
from typing import List


class XapiError(Exception):
    def __init__(self, code: str, *params):
        self.code = code
        self.params = [p if isinstance(p, str) else str(p) for p in params]
        super().__init__(code, *self.params)

    @property
    def description(self) -> List[str]:
        return [self.code] + self.params

    def __str__(self) -> str:
        return ' '.join(self.description)


def handle_invalid(cls: str, ref: str) -> XapiError:
    return XapiError('HANDLE_INVALID', cls, ref)


def internal(message: str) -> XapiError:
    return XapiError('INTERNAL_ERROR', message)
