"""An ``event.from``-fed cache of XAPI records.

Periodic work (power states, host stats, PCI inventory) reads this cache
instead of the wire, like the ironic driver's ``node_cache``. One watcher
thread (a greenthread under eventlet's monkey patching) holds a session of
its own — its long polls would otherwise pin a pool slot — and:

1. takes a token with ``event.from(classes, '', 0)``,
2. loads every record with ``<class>.get_all_records``,
3. applies ``event.from`` batches from that token on; events that predate
   the load are applied again, which is harmless since every event carries
   the object's whole record.

On ``EVENTS_LOST``, an unparsable token, an expired session or a lost
connection it logs in again if needed and resynchronises from step 1,
reporting the differences to subscribers as add/mod/del events.  It also
resynchronises every ``resync_interval`` seconds: XAPI's ``event.from``
never reports ``EVENTS_LOST`` -- a table remembers only its last few hundred
deletions, older ones are silently left out (xen-api
``ocaml/database/db_cache_types.ml`` ``Table.remove``,
``ocaml/xapi/xapi_event.ml`` ``from_inner``) -- so a burst of deletions
between two polls would otherwise leave ghosts in the cache for good.
"""
import copy
import threading
import time
from typing import (Callable, Dict, Iterable, List, NamedTuple, Optional,
                    Tuple)

from oslo_log import log as logging

from nova_xen_stubdom.xapi import constants
from nova_xen_stubdom.xapi import errors
from nova_xen_stubdom.xapi import session as xsession

LOG = logging.getLogger(__name__)

DEFAULT_CLASSES = ('VM', 'VM_metrics', 'VM_guest_metrics', 'host',
                   'host_metrics', 'pool', 'SR', 'VDI', 'VBD', 'VIF',
                   'network', 'PCI', 'PGPU')

#: seconds between attempts while the host is unreachable
RECONNECT_INTERVAL = 1.0
#: seconds between full reloads (lost deletions cannot be detected)
RESYNC_INTERVAL = 600.0


class CacheEvent(NamedTuple):
    """A change seen by the cache.

    :ivar cls: datamodel class name ('VM').
    :ivar operation: 'add', 'mod' or 'del'.
    :ivar ref: the object's reference.
    :ivar old: the record before (None for add).
    :ivar new: the record after (None for del).
    """
    cls: str
    operation: str
    ref: str
    old: Optional[dict]
    new: Optional[dict]


Subscriber = Callable[[CacheEvent], None]


class RecordCache:
    """Records of *classes*, kept current by ``event.from``.

    :param client: the :class:`~nova_xen_stubdom.xapi.client.XAPIClient`
        (logs in the watcher's session, records calls).
    :param classes: datamodel class names to follow.
    :param poll_timeout: seconds one ``event.from`` may block; bounds how
        long :meth:`stop` waits for the watcher.
    """

    def __init__(self, client, classes: Optional[Iterable[str]] = None,
                 poll_timeout: float = 30.0,
                 resync_interval: float = RESYNC_INTERVAL) -> None:
        self._client = client
        self.resync_interval = float(resync_interval)
        self._last_sync = 0.0
        self.classes = tuple(classes or DEFAULT_CLASSES)
        self._by_lower = {c.lower(): c for c in self.classes}
        self.poll_timeout = float(poll_timeout)
        self._cond = threading.Condition(threading.RLock())
        self._records: Dict[str, Dict[str, dict]] = {
            c: {} for c in self.classes}
        self._subscribers: List[Subscriber] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._session: Optional[xsession.XAPISession] = None
        self.generation = 0        # bumped on every applied change
        self.resyncs = 0           # full reloads done (1 after start)
        self.token: Optional[str] = None

    # ---------------------------------------------------------- lifecycle

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name='xapi-event-cache')
        self._thread.start()

    def stop(self, timeout: Optional[float] = None) -> None:
        """Stop the watcher and log its session out."""
        self._stop.set()
        sess = self._session
        if sess is not None:
            self._client.logout(sess, in_use=True)
            # Do not wait for the long poll to time out.
            sess.interrupt()
        if self._thread is not None and \
                self._thread is not threading.current_thread():
            self._thread.join(self.poll_timeout + 5
                              if timeout is None else timeout)
        with self._cond:
            self._cond.notify_all()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait_ready(self, timeout: Optional[float] = None) -> bool:
        """Wait for the first full load; True when it is done."""
        return self._ready.wait(timeout)

    # ------------------------------------------------------------ lookups

    def _table(self, cls: str) -> Dict[str, dict]:
        try:
            return self._records[cls]
        except KeyError:
            raise KeyError('class %r is not cached (cached: %s)'
                           % (cls, ', '.join(self.classes))) from None

    def get(self, cls: str, ref: str) -> Optional[dict]:
        """A copy of *ref*'s record, or None."""
        with self._cond:
            rec = self._table(cls).get(ref)
            return copy.deepcopy(rec) if rec is not None else None

    def get_all(self, cls: str) -> Dict[str, dict]:
        """``{ref: record}`` copies of every cached object of *cls*."""
        with self._cond:
            return copy.deepcopy(self._table(cls))

    def refs(self, cls: str) -> List[str]:
        with self._cond:
            return list(self._table(cls))

    def find(self, cls: str, other_config: Optional[dict] = None,
             **fields) -> List[Tuple[str, dict]]:
        """Objects whose ``other_config`` holds every key (with the value,
        unless the value given is None) and whose fields equal *fields*."""
        other_config = other_config or {}
        found = []
        with self._cond:
            for ref, rec in self._table(cls).items():
                oc = rec.get('other_config') or {}
                if any(k not in oc or (v is not None and oc[k] != v)
                       for k, v in other_config.items()):
                    continue
                if any(rec.get(k) != v for k, v in fields.items()):
                    continue
                found.append((ref, copy.deepcopy(rec)))
        return found

    def find_one(self, cls: str, other_config: Optional[dict] = None,
                 **fields) -> Optional[Tuple[str, dict]]:
        found = self.find(cls, other_config, **fields)
        return found[0] if found else None

    def wait_for(self, cls: str, ref: str,
                 predicate: Callable[[Optional[dict]], bool],
                 timeout: float) -> Optional[dict]:
        """Block until ``predicate(record)`` holds (record None when the
        object is gone); return the record.

        :raises XAPITimeout: not within *timeout* seconds.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                rec = self._table(cls).get(ref)
                if self._ready.is_set() and predicate(rec):
                    return copy.deepcopy(rec)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stop.is_set():
                    raise errors.XAPITimeout(
                        'cached %s %s did not reach the expected state '
                        'within %ss' % (cls, ref, timeout))
                self._cond.wait(remaining)

    # -------------------------------------------------------- subscribers

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call *callback(CacheEvent)* on every change; returns a function
        that unsubscribes. Callbacks run in the watcher thread and must not
        block for long."""
        with self._cond:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._cond:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)
        return unsubscribe

    def _notify(self, events: List[CacheEvent]) -> None:
        if not events:
            return
        with self._cond:
            subscribers = list(self._subscribers)
        if not subscribers:
            return
        # Subscribers get copies: a callback editing a record must not
        # change the cache.
        events = [ev._replace(old=copy.deepcopy(ev.old),
                              new=copy.deepcopy(ev.new)) for ev in events]
        for ev in events:
            for cb in subscribers:
                try:
                    cb(ev)
                except Exception:
                    LOG.exception('XAPI cache subscriber %(cb)r failed on '
                                  '%(op)s %(cls)s %(ref)s',
                                  {'cb': cb, 'op': ev.operation,
                                   'cls': ev.cls, 'ref': ev.ref})

    # ------------------------------------------------------------ watcher

    def _call(self, method: str, *args, timeout: Optional[float] = None):
        self._client._record(method, args)
        return self._session.invoke(method, list(args),
                                    timeout or self._client.call_timeout)

    def _ensure_session(self) -> None:
        if self._session is None or self._session.ref is None:
            self._session = self._client.login()

    def _resync(self) -> None:
        token = self._call('event.from', list(self.classes), '', 0.0)['token']
        fresh = {c: self._call('%s.get_all_records' % c) for c in self.classes}
        events = []
        with self._cond:
            for cls, records in fresh.items():
                table = self._records[cls]
                for ref, rec in records.items():
                    old = table.get(ref)
                    if old != rec:
                        events.append(CacheEvent(
                            cls, constants.EVENT_ADD if old is None
                            else constants.EVENT_MOD, ref, old, rec))
                for ref in set(table) - set(records):
                    events.append(CacheEvent(cls, constants.EVENT_DEL, ref,
                                             table[ref], None))
                self._records[cls] = dict(records)
            self.token = token
            self._last_sync = time.monotonic()
            self.resyncs += 1
            self.generation += 1
            self._ready.set()
            self._cond.notify_all()
        self._notify(events)

    def _apply(self, batch: dict) -> None:
        events = []
        with self._cond:
            for ev in batch.get('events', ()):
                cls = self._by_lower.get(str(ev.get('class', '')).lower())
                if cls is None:
                    continue
                ref = ev.get('ref')
                op = ev.get('operation')
                table = self._records[cls]
                old = table.get(ref)
                if op == constants.EVENT_DEL:
                    if old is not None:
                        del table[ref]
                        events.append(CacheEvent(cls, op, ref, old, None))
                    continue
                new = ev.get('snapshot')
                if not isinstance(new, dict):
                    continue
                table[ref] = new
                if old != new:
                    events.append(CacheEvent(
                        cls, constants.EVENT_ADD if old is None
                        else constants.EVENT_MOD, ref, old, new))
            self.token = batch.get('token', self.token)
            if events:
                self.generation += 1
            self._cond.notify_all()
        self._notify(events)

    def _run(self) -> None:
        need_sync = True
        while not self._stop.is_set():
            try:
                self._ensure_session()
                if self._stop.is_set():
                    break
                if need_sync or time.monotonic() - self._last_sync > \
                        self.resync_interval:
                    self._resync()
                    need_sync = False
                batch = self._call(
                    'event.from', list(self.classes), self.token,
                    min(self.poll_timeout, self.resync_interval),
                    timeout=self.poll_timeout + self._client.call_timeout)
                if self._stop.is_set():
                    break
                self._apply(batch)
            except errors.XAPIClosed:
                break           # the client was closed under us
            except errors.SessionInvalid:
                if self._stop.is_set():
                    break
                LOG.info('XAPI event session expired; logging in again')
                self._client._forget(self._session)
                self._session = None
                need_sync = True
            except errors.XAPIError as exc:
                if self._stop.is_set():
                    break
                LOG.warning('XAPI event.from failed (%s); resynchronising',
                            exc)
                need_sync = True
                if not exc.matches(constants.EVENTS_LOST,
                                   constants.EVENT_FROM_TOKEN_PARSE_FAILURE):
                    # NOTE(xapi): a lost token is cured by a reload; any
                    # other refusal may repeat, so do not spin on it.
                    self._stop.wait(RECONNECT_INTERVAL)
            except (errors.XAPIException,) + xsession.CONNECTION_ERRORS \
                    as exc:
                if self._stop.is_set():
                    break
                LOG.warning('XAPI event watcher lost the host (%s); '
                            'retrying in %ss', exc, RECONNECT_INTERVAL)
                need_sync = True
                # NOTE(xapi): log in again through the client, which follows
                # a master that moved; the old session is logged out if its
                # host still answers, so it does not leak.
                sess, self._session = self._session, None
                if sess is not None:
                    self._client.logout(sess)
                self._stop.wait(RECONNECT_INTERVAL)
            except Exception:
                LOG.exception('XAPI event watcher failed; resynchronising')
                need_sync = True
                self._stop.wait(RECONNECT_INTERVAL)
        sess, self._session = self._session, None
        if sess is not None:
            self._client.logout(sess)
