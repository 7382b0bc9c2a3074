"""An in-memory xenstore for the dom0 tests' stand-in backends (standard
library only: the dom0 tests run on Python 3.6 too)."""
from typing import Dict, List, Optional


class DictXenstore:
    """The ``xs_*`` methods of :class:`HypervisorBackend` over two dicts:
    path -> value and path -> permissions (``['n0']`` when unset).

    As xenstored does, a node dom0 creates (and each missing parent on
    its way) takes its parent's permissions (Xen 4.17
    ``tools/xenstore/xenstored_core.c`` ``construct_node``: "Inherit
    permissions"): a child written before its directory's permissions
    are set keeps the old ones."""

    def __init__(self) -> None:
        self.xs: Dict[str, str] = {}
        self.perms: Dict[str, List[str]] = {}
        #: what nodes took from their parent when created (kept apart
        #: from the permissions set explicitly, which tests compare)
        self.inherited: Dict[str, List[str]] = {}

    def xs_read(self, path) -> Optional[str]:
        return self.xs.get(path)

    def xs_write(self, path, value):
        parts = path.strip('/').split('/')
        for i in range(1, len(parts) + 1):
            node = '/' + '/'.join(parts[:i])
            if node not in self.xs and node not in self.inherited \
                    and node not in self.perms:
                parent = '/' + '/'.join(parts[:i - 1])
                self.inherited[node] = list(self.xs_get_perms(parent))
        self.xs[path] = value

    def xs_rm(self, path):
        for table in (self.xs, self.perms, self.inherited):
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
        if path in self.perms:
            return self.perms[path]
        return self.inherited.get(path, ['n0'])
