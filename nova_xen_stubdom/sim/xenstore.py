"""A xenstore tree with Xen's ownership and permission semantics.

Each node has a permission list ``[owner+default, domid+perm, ...]`` written
like the ``xenstore-chmod`` tool does (``n0``, ``r5``, ``b7``; ``n`` none,
``r`` read, ``w`` write, ``b`` both).  The owner and dom0 may do anything; a
domain with a ``target`` (a stub domain) is additionally treated as its
target, as xenstored does after ``xc_domain_set_target``.  A new node
inherits its parent's permissions, owned by the creating domain when that
domain is unprivileged.
"""
import threading
from typing import Callable, Dict, List, Optional


class XenstoreError(Exception):
    """errno-like failure: ``ENOENT``, ``EACCES``, ``EINVAL``."""

    def __init__(self, errno_name: str, path: str):
        self.errno_name = errno_name
        self.path = path
        super().__init__('%s: %s' % (errno_name, path))


class _Node:
    __slots__ = ('value', 'perms', 'children')

    def __init__(self, value: str, perms: List[str]):
        self.value = value
        self.perms = perms
        self.children: Dict[str, '_Node'] = {}


def _parts(path: str) -> List[str]:
    if not path.startswith('/'):
        raise XenstoreError('EINVAL', path)
    return [p for p in path.split('/') if p]


class Xenstore:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.root = _Node('', ['n0'])
        #: domid -> target domid (set_target)
        self.targets: Dict[int, int] = {}
        #: domid -> (store pfn, event channel) of XS_INTRODUCE (xenstored
        #: maps that ring and listens on that port; the last one counts)
        self.introduced: Dict[int, tuple] = {}
        self._watches: List[tuple] = []

    # -- permissions -------------------------------------------------------
    def _ids(self, caller: int) -> List[int]:
        ids = [caller]
        if caller in self.targets:
            ids.append(self.targets[caller])
        return ids

    def _allowed(self, node: _Node, caller: int, want: str) -> bool:
        if caller == 0:
            return True
        ids = self._ids(caller)
        owner = int(node.perms[0][1:])
        if owner in ids:
            return True
        granted = None
        for entry in node.perms[1:]:
            if int(entry[1:]) in ids:
                granted = (granted or '') + entry[0]
        if granted is None:
            granted = node.perms[0][0]
        return 'b' in granted or want in granted

    def _walk(self, path: str) -> Optional[_Node]:
        node = self.root
        for p in _parts(path):
            node = node.children.get(p)
            if node is None:
                return None
        return node

    def _get(self, path: str, caller: int, want: str) -> _Node:
        node = self._walk(path)
        if node is None:
            raise XenstoreError('ENOENT', path)
        if not self._allowed(node, caller, want):
            raise XenstoreError('EACCES', path)
        return node

    # -- operations --------------------------------------------------------
    def read(self, path: str, caller: int = 0) -> Optional[str]:
        with self.lock:
            try:
                return self._get(path, caller, 'r').value
            except XenstoreError as e:
                if e.errno_name == 'ENOENT':
                    return None
                raise

    def exists(self, path: str) -> bool:
        with self.lock:
            return self._walk(path) is not None

    def write(self, path: str, value: str, caller: int = 0) -> None:
        with self.lock:
            node = self.root
            for p in _parts(path):
                child = node.children.get(p)
                if child is None:
                    if not self._allowed(node, caller, 'w'):
                        raise XenstoreError('EACCES', path)
                    perms = list(node.perms)
                    if caller != 0:
                        perms[0] = perms[0][0] + str(caller)
                    child = _Node('', perms)
                    node.children[p] = child
                node = child
            if not self._allowed(node, caller, 'w'):
                raise XenstoreError('EACCES', path)
            node.value = value
        self._fire(path)

    def mkdir(self, path: str, caller: int = 0) -> None:
        if self.read(path, caller) is None:
            self.write(path, '', caller)

    def rm(self, path: str, caller: int = 0) -> None:
        with self.lock:
            parts = _parts(path)
            if not parts:
                raise XenstoreError('EINVAL', path)
            parent = self._walk('/' + '/'.join(parts[:-1]))
            if parent is None or parts[-1] not in parent.children:
                return
            node = parent.children[parts[-1]]
            if not self._allowed(node, caller, 'w'):
                raise XenstoreError('EACCES', path)
            del parent.children[parts[-1]]
        self._fire(path)

    def list(self, path: str, caller: int = 0) -> List[str]:
        with self.lock:
            try:
                return sorted(self._get(path, caller, 'r').children)
            except XenstoreError as e:
                if e.errno_name == 'ENOENT':
                    return []
                raise

    def set_perms(self, path: str, perms: List[str], caller: int = 0
                  ) -> None:
        for p in perms:
            if len(p) < 2 or p[0] not in 'nrwb' or not p[1:].isdigit():
                raise XenstoreError('EINVAL', path)
        with self.lock:
            node = self._get(path, caller, 'w')
            if caller != 0 and int(node.perms[0][1:]) not in \
                    self._ids(caller):
                raise XenstoreError('EACCES', path)
            node.perms = list(perms)
        self._fire(path)

    def get_perms(self, path: str, caller: int = 0) -> List[str]:
        with self.lock:
            return list(self._get(path, caller, 'r').perms)

    def set_target(self, domid: int, target: int) -> None:
        with self.lock:
            self.targets[domid] = target

    def introduce(self, domid: int, store_pfn: int, port: int) -> None:
        with self.lock:
            self.introduced[domid] = (store_pfn, port)
        self._fire('@introduceDomain')

    def forget_domain(self, domid: int) -> None:
        with self.lock:
            self.targets.pop(domid, None)
            self.introduced.pop(domid, None)

    def dump(self, path: str = '/') -> Dict[str, str]:
        """Every node below *path* -> value (for tests and debugging)."""
        out = {}
        with self.lock:
            start = self._walk(path)
            if start is None:
                return out

            def rec(prefix, node):
                for name, child in node.children.items():
                    p = prefix.rstrip('/') + '/' + name
                    out[p] = child.value
                    rec(p, child)
            rec(path, start)
        return out

    # -- watches -----------------------------------------------------------
    def watch(self, prefix: str, callback: Callable[[str], None]) -> object:
        token = (prefix, callback)
        with self.lock:
            self._watches.append(token)
        return token

    def unwatch(self, token: object) -> None:
        with self.lock:
            if token in self._watches:
                self._watches.remove(token)

    def _fire(self, path: str) -> None:
        with self.lock:
            watches = [w for w in self._watches
                       if path == w[0]
                       or path.startswith(w[0].rstrip('/') + '/')
                       or w[0].startswith(path.rstrip('/') + '/')]
        for _prefix, cb in watches:
            try:
                cb(path)
            except Exception:  # a watcher's bug must not break the writer
                import logging
                logging.getLogger(__name__).exception('xenstore watch')
