"""XAPI sessions: login, logout, expiry, roles, toolstack restarts."""
import threading
import time
from typing import Dict, Optional

from nova_xen_stubdom.sim import wire
from nova_xen_stubdom.sim.errors import XapiError
from nova_xen_stubdom.datamodel.schema import Message

#: Session limits of XAPI's session GC (ocaml/xapi/xapi_globs.ml
#: max_sessions_per_originator, max_sessions_per_user_name, max_sessions =
#: max_tasks * 2)
MAX_PER_ORIGINATOR = 500
MAX_PER_USER_NAME = 500
MAX_SESSIONS = 400

#: XAPI's role names, most to least privileged
ROLES = ('pool-admin', 'pool-operator', 'vm-power-admin', 'vm-admin',
         'vm-operator', 'read-only')


class Sessions:
    def __init__(self, pool, users: Dict[str, tuple],
                 idle_timeout: float = 24 * 3600):
        self.pool = pool
        #: username -> (password, role)
        self.users = users
        self.idle_timeout = idle_timeout
        self.lock = threading.Lock()
        #: session ref -> dict(role, host ref, last monotonic, epoch)
        self.live: Dict[str, dict] = {}

    def login(self, username: str, password: str, host, originator: str,
              pool_login: bool = False) -> str:
        if not host.is_master:
            raise XapiError('HOST_IS_SLAVE', self.pool.master.address)
        user = self.users.get(username)
        if user is None or user[0] != password:
            raise XapiError('SESSION_AUTHENTICATION_FAILED', username,
                            'Authentication failure')
        role = user[1]
        db = self.pool.db
        ref = db.create('session', {
            'this_host': host.ref,
            'last_active': wire.now(),
            'pool': pool_login,
            'is_local_superuser': role == 'pool-admin',
            'auth_user_name': username,
            'originator': originator,
            'validation_time': wire.now(),
        })
        with self.lock:
            self.live[ref] = {'role': role, 'host': host.ref,
                              'last': time.monotonic(),
                              'epoch': host.toolstack_epoch,
                              'user': username, 'pool': pool_login,
                              'originator': originator}
        self._gc(self._group(self.live[ref]))
        return ref

    @staticmethod
    def _group(s: dict) -> tuple:
        """``Db_gc_util.timeout_sessions``: pool sessions, anonymous root
        sessions (no originator), per originator (root) or per user name
        (anyone else) -- each group with its limit."""
        root = s['user'] in ('', 'root')
        if s['pool']:
            return ('internal', MAX_SESSIONS)
        if root and not s['originator']:
            return ('external', MAX_SESSIONS)
        if root:
            return ('originator:' + s['originator'], MAX_PER_ORIGINATOR)
        return ('username:' + s['user'], MAX_PER_USER_NAME)

    def _gc(self, group: tuple) -> None:
        """``Db_gc_util.timeout_sessions_common``: past the group's limit,
        the least recently active sessions are destroyed (their next use
        answers SESSION_INVALID).  XAPI runs this every 30 s
        (``Db_gc.db_GC_TIMER``); the simulator at each login, which is
        stricter.  Not modelled: sessions with a pending task are spared."""
        with self.lock:
            members = sorted(
                (s['last'], r) for r, s in self.live.items()
                if self._group(s) == group)
            over = max(0, len(members) - group[1])
            excess = [r for _, r in members[:over]]
            for r in excess:
                del self.live[r]
        for r in excess:
            if self.pool.db.exists('session', r):
                self.pool.db.destroy('session', r)

    def check(self, ref: str, host) -> str:
        with self.lock:
            s = self.live.get(ref)
            if s is not None:
                h = self.pool.host_by_ref(s['host'])
                expired = (time.monotonic() - s['last'] > self.idle_timeout
                           or h is None or h.toolstack_epoch != s['epoch'])
                if expired:
                    del self.live[ref]
                    s = None
                else:
                    s['last'] = time.monotonic()
                    rec = self.pool.db.tables['session'].get(ref)
                    if rec is not None:
                        # no event for it: XAPI does not wake event.from
                        # watchers for every call either
                        rec['last_active'] = wire.now()
        if s is None:
            if self.pool.db.exists('session', ref):
                self.pool.db.destroy('session', ref)
            raise XapiError('SESSION_INVALID', ref)
        return ref

    def role(self, ref: str) -> Optional[str]:
        with self.lock:
            s = self.live.get(ref)
            return s['role'] if s else None

    def check_role(self, ref: str, msg: Message) -> None:
        role = self.role(ref)
        if role not in msg.roles:
            raise XapiError('RBAC_PERMISSION_DENIED', msg.wire_name.lower(),
                            'No permission in user session')

    def logout(self, ref: str) -> None:
        with self.lock:
            self.live.pop(ref, None)
        if self.pool.db.exists('session', ref):
            self.pool.db.destroy('session', ref)

    def expire(self, ref: Optional[str] = None) -> int:
        """Expire one session or all (fault injection): returns how many."""
        with self.lock:
            refs = [ref] if ref else list(self.live)
            n = 0
            for r in refs:
                if self.live.pop(r, None) is not None:
                    n += 1
        for r in refs:
            if self.pool.db.exists('session', r):
                self.pool.db.destroy('session', r)
        return n

    def count(self) -> int:
        with self.lock:
            return len(self.live)

    def user_of(self, ref: str) -> str:
        with self.lock:
            s = self.live.get(ref)
            return s['user'] if s else ''
