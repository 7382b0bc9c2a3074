"""An in-memory xenstore for the dom0 tests' stand-in backends (standard
library only: the dom0 tests run on Python 3.6 too)."""
from typing import Dict, List, Optional


class DictXenstore:
    """The ``xs_*`` methods of :class:`HypervisorBackend` over two dicts:
    path -> value and path -> permissions (``['n0']`` when unset)."""

    def __init__(self) -> None:
        self.xs: Dict[str, str] = {}
        self.perms: Dict[str, List[str]] = {}

    def xs_read(self, path) -> Optional[str]:
        return self.xs.get(path)

    def xs_write(self, path, value):
        self.xs[path] = value

    def xs_rm(self, path):
        for table in (self.xs, self.perms):
            for key in [k for k in table if k == path or
                        k.startswith(path + '/')]:
                del table[key]

    def xs_list(self, path):
        prefix = path.rstrip('/') + '/'
        return sorted({k[len(prefix):].split('/')[0] for k in self.xs
                       if k.startswith(prefix)})

    def xs_set_perms(self, path, perms):
        self.perms[path] = list(perms)

    def xs_get_perms(self, path):
        return self.perms.get(path, ['n0'])
