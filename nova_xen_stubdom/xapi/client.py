"""The XAPI client: one ``call`` entry point over a bounded session pool.

Modelled on Nova's ironic client wrapper: every remote call goes through
:meth:`XAPIClient.call` with a dotted XAPI message name. It owns the
sessions (login with a timeout, one re-login on ``SESSION_INVALID``, the
``HOST_IS_SLAVE`` redirect to the pool master), config-driven retries of
transient failures, the translation of XAPI failures into
:mod:`~nova_xen_stubdom.xapi.errors`, masking of secrets in logs, and the
recording of each call for the fidelity tests.
"""
import errno
import http.client
import logging
import threading
import time
import urllib.parse
from typing import List, Optional, Sequence

from oslo_log import log as oslo_logging

from nova_xen_stubdom.xapi import constants
from nova_xen_stubdom.xapi import errors
from nova_xen_stubdom.xapi import failover
from nova_xen_stubdom.xapi import handlers
from nova_xen_stubdom.xapi import pool as xpool
from nova_xen_stubdom.xapi import recorder
from nova_xen_stubdom.xapi import redact
from nova_xen_stubdom.xapi import session as xsession
from nova_xen_stubdom.xapi import tasks
from nova_xen_stubdom.xapi import transport as xtransport

LOG = oslo_logging.getLogger(__name__)

#: Redirects followed for one call (a pool whose master moves while we
#: follow it); more means the pool is misconfigured.
MAX_REDIRECTS = 3

#: Message suffixes that only read: safe to resend after a connection was
#: lost mid-call (the first send may or may not have been executed).
_READ_ONLY_PREFIXES = ('get_',)

_READ_ONLY_MESSAGES = frozenset(['event.from', 'session.get_this_host'])


def _is_read_only(method: str) -> bool:
    if method in _READ_ONLY_MESSAGES:
        return True
    return method.rsplit('.', 1)[-1].startswith(_READ_ONLY_PREFIXES)


def to_wire(value):
    """Encode *value* as XAPI expects: ints (int64) as decimal strings,
    map keys as strings, recursively. bools stay bools.

    :raises TypeError: *value* holds None, which XAPI has no encoding for
        (the server would answer with an unmarshalling error).
    """
    if value is None:
        raise TypeError('XAPI has no null value; pass OpaqueRef:NULL, '
                        '"" or leave the key out')
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dict):
        return {str(to_wire(k)): to_wire(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_wire(v) for v in value]
    return value


def _unreachable(exc: BaseException) -> bool:
    """The host did not take the connection (nothing was sent)."""
    return isinstance(exc, ConnectionRefusedError) or (
        isinstance(exc, OSError) and exc.errno in (
            errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ECONNREFUSED))


def _warn_if_insecure(url: str, verify_tls: bool) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() == 'https':
        if not verify_tls:
            LOG.warning('XAPI certificate verification is off for %s '
                        '([xen_stubdom] verify_tls = False): test pools '
                        'only', xtransport.redact_url(url))
        return
    host = parts.hostname or ''
    loopback = host == 'localhost' or host.startswith('127.') or \
        host == '::1'
    if not loopback:
        LOG.warning('XAPI URL %s is plain http to a remote host: the '
                    'password and session travel unencrypted; use https',
                    xtransport.redact_url(url))


class XAPIClient:
    """Talks to one XAPI pool.

    :param url: XAPI URL (``https://host`` or the simulator's
        ``http://127.0.0.1:PORT``); a pool member's URL is redirected to the
        master on login.
    :param username: XAPI user.
    :param password: its password; never logged.
    :param verify_tls: verify the server certificate of https URLs.
    :param ca_file: CA bundle for that verification (system CAs if None).
    :param concurrent: most sessions (and concurrent calls) at once.
    :param login_timeout: seconds for one login.
    :param call_timeout: seconds for one synchronous call.
    :param task_timeout: default seconds to wait for an ``Async.*`` task.
    :param max_retries: retries of transient failures.
    :param retry_interval: seconds between retries.
    :param originator: originator string given to XAPI at login.
    :param record_globally: also record calls into ``recorder.GLOBAL``
        (checked by the fidelity test); tests that make invalid calls on
        purpose turn it off.
    """

    def __init__(self, url: str, username: str, password: Optional[str],
                 verify_tls: bool = True, ca_file: Optional[str] = None,
                 concurrent: int = 5, login_timeout: float = 10,
                 call_timeout: float = 60, task_timeout: float = 600,
                 max_retries: int = 3, retry_interval: float = 0.5,
                 originator: str = constants.DEFAULT_ORIGINATOR,
                 record_globally: bool = True) -> None:
        if not url:
            raise ValueError('[xen_stubdom] connection_url is not set')
        xtransport.make_transport(url)      # validates the scheme early
        self._url = url
        self._initial_url = url
        self._username = username
        self._password = password or ''
        self._ssl_context = (xtransport.make_ssl_context(verify_tls, ca_file)
                             if url.lower().startswith('https') else None)
        _warn_if_insecure(url, verify_tls)
        self.login_timeout = login_timeout
        self.call_timeout = call_timeout
        self.task_timeout = task_timeout
        self.max_retries = max_retries
        self.retry_interval = retry_interval
        self.originator = originator
        self._lock = threading.Lock()
        self._live: set = set()          # logged-in XAPISession objects
        self._peak_sessions = 0
        self._logins = 0
        self._pool = xpool.SessionPool(self._new_pool_session, concurrent)
        self._cache = None
        self._members: List[str] = []       # pool hosts' URLs
        self._members_from: Optional[str] = None
        self.call_log = recorder.CallRecorder()
        self._record_globally = record_globally

    @classmethod
    def from_conf(cls, conf, url: Optional[str] = None) -> 'XAPIClient':
        """Build a client from ``conf.xen_stubdom``.

        :param conf: an oslo.config ``ConfigOpts`` with the project's
            options registered (``nova_xen_stubdom.conf``).
        :param url: overrides ``connection_url`` (e.g. a second pool).
        """
        group = conf.xen_stubdom
        return cls(url or group.connection_url,
                   group.connection_username,
                   group.connection_password,
                   verify_tls=group.verify_tls,
                   ca_file=group.ca_file,
                   concurrent=group.connection_concurrent,
                   login_timeout=group.login_timeout,
                   call_timeout=group.call_timeout,
                   task_timeout=group.task_timeout,
                   max_retries=group.api_max_retries,
                   retry_interval=group.api_retry_interval)

    # ------------------------------------------------------------ state

    @property
    def url(self) -> str:
        """The URL calls currently go to (the master's after a redirect)."""
        return self._url

    master_url = url

    @property
    def open_sessions(self) -> int:
        """Sessions this client has logged in and not yet logged out."""
        with self._lock:
            return len(self._live)

    @property
    def peak_sessions(self) -> int:
        """Most sessions that were logged in at the same time."""
        return self._peak_sessions

    @property
    def logins(self) -> int:
        """Successful logins so far (re-logins included)."""
        return self._logins

    @property
    def pool(self) -> xpool.SessionPool:
        return self._pool

    @property
    def closed(self) -> bool:
        return self._pool.closed

    def __repr__(self) -> str:
        return ('<XAPIClient %s user=%s sessions=%d>'
                % (xtransport.redact_url(self._url), self._username,
                   self.open_sessions))

    # ---------------------------------------------------------- sessions

    def _new_pool_session(self) -> xsession.XAPISession:
        return self.login()

    def login(self, originator: Optional[str] = None,
              username: Optional[str] = None,
              password: Optional[str] = None) -> xsession.XAPISession:
        """Log a new session in (following ``HOST_IS_SLAVE``).

        Used by the pool and by the event cache (which needs a session of
        its own for its long polls). The caller owns the session and must
        give it to :meth:`logout` (:meth:`close` logs out what is left).

        :param originator: instead of the client's (XAPI bounds sessions
            per originator: a separate one keeps handed-out sessions from
            pushing the pool's out).
        :param username: another XAPI account (with *password*) than the
            client's, e.g. a less privileged one for sessions handed out.
        """
        redirects = 0
        attempt = 0
        while True:
            if self._pool.closed:
                raise errors.XAPIClosed('XAPI client is closed')
            url = self._url
            sess = xsession.XAPISession(url, self._ssl_context)
            args = self._login_args(originator)
            if username:
                args[0:2] = [username, password or '']
            self._record('session.login_with_password', args)
            try:
                ref = sess.raw('session.login_with_password', args,
                               self.login_timeout)
            except errors.HostIsSlave as exc:
                sess.close_connection()
                if redirects >= MAX_REDIRECTS:
                    raise
                redirects += 1
                self._redirect(url, exc.master_address)
                continue
            except xsession.CONNECTION_ERRORS as exc:
                sess.close_connection()
                if (isinstance(exc, ConnectionError)
                        and attempt < self.max_retries):
                    attempt += 1
                    LOG.warning('XAPI login to %(url)s failed (%(exc)s); '
                                'retry %(n)d of %(max)d',
                                {'url': xtransport.redact_url(url),
                                 'exc': exc, 'n': attempt,
                                 'max': self.max_retries})
                    time.sleep(self.retry_interval)
                    continue
                if _unreachable(exc) and self._failover(url):
                    attempt = 0
                    continue
                raise errors.XAPIConnectionError(
                    xtransport.redact_url(url),
                    'session.login_with_password', exc) from exc
            sess.ref = ref
            with self._lock:
                self._live.add(sess)
                self._logins += 1
                self._peak_sessions = max(self._peak_sessions,
                                          len(self._live))
            LOG.debug('XAPI login to %(url)s as %(user)s: %(sess)r',
                      {'url': xtransport.redact_url(url),
                       'user': self._username, 'sess': sess})
            self._learn_members(sess)
            return sess

    # ---------------------------------------------------- master failover

    @property
    def pool_members(self) -> List[str]:
        """URLs of the pool's hosts, learned at the first login."""
        with self._lock:
            return list(self._members)

    def _learn_members(self, sess: xsession.XAPISession) -> None:
        with self._lock:
            if self._members_from == sess.url:
                return
            self._members_from = sess.url
        urls = failover.pool_host_urls(self, sess)
        if urls is not None:
            with self._lock:
                self._members = urls

    def _failover(self, dead_url: str) -> bool:
        """*dead_url* (the master) is unreachable: move to the host that
        is the master now, if another pool host names one.

        :returns: True if calls now go to another host.
        """
        with self._lock:
            members = [u for u in self._members if u != dead_url]
        new = failover.find_master(self, members, dead_url)
        if new is None:
            return False
        with self._lock:
            if self._url != dead_url:
                return True         # another thread already moved on
            self._url = new
        LOG.warning('XAPI pool master %(old)s is unreachable; %(new)s is '
                    'the master now',
                    {'old': xtransport.redact_url(dead_url),
                     'new': xtransport.redact_url(new)})
        # Sessions on the dead host cannot even be logged out.
        for stale in self._pool.drain_idle():
            self._forget(stale)
        return True

    def _login_args(self, originator: Optional[str] = None) -> list:
        return [self._username, self._password, constants.API_VERSION,
                originator or self.originator]

    def logout(self, sess: xsession.XAPISession,
               in_use: bool = False) -> None:
        """Log *sess* out (best effort) and forget it.

        :param in_use: another thread may be inside a call on *sess*: send
            the logout over a connection of its own (a transport is not
            shared between threads).
        """
        with self._lock:
            if sess not in self._live:
                return
            self._live.discard(sess)
        self._record('session.logout', [])
        via = sess
        if in_use:
            via = xsession.XAPISession(sess.url, self._ssl_context)
            via.ref = sess.ref
        try:
            via.invoke('session.logout', [], self.login_timeout)
        except errors.SessionInvalid:
            pass            # already gone server-side: nothing leaks
        except (errors.XAPIException,) + xsession.CONNECTION_ERRORS as exc:
            LOG.warning('XAPI logout of %(sess)r failed: %(exc)s',
                        {'sess': sess, 'exc': exc})
        finally:
            via.close_connection()

    def _forget(self, sess: xsession.XAPISession) -> None:
        """Drop a session the server no longer knows (no logout call)."""
        with self._lock:
            self._live.discard(sess)
        sess.close_connection()

    def _redirect(self, from_url: str, master_address: str) -> None:
        new_url = xtransport.master_url(from_url, master_address)
        with self._lock:
            changed = self._url == from_url and new_url != from_url
            if changed:
                self._url = new_url
        if changed:
            LOG.info('XAPI host %(old)s is a pool member; using the pool '
                     'master %(new)s',
                     {'old': xtransport.redact_url(from_url),
                      'new': xtransport.redact_url(new_url)})
            # Sessions on the old host are useless now.
            for stale in self._pool.drain_idle():
                self.logout(stale)

    def _release(self, sess: xsession.XAPISession) -> None:
        if self._pool.closed or sess.url != self._url:
            self._pool.discard(sess)
            self.logout(sess)
        else:
            self._pool.release(sess)

    # ------------------------------------------------------------- calls

    def _record(self, method: str, args: Sequence) -> None:
        self.call_log.record(method, args)
        if self._record_globally:
            recorder.GLOBAL.record(method, args)

    def call(self, method: str, *args):
        """Call XAPI message *method* (``'VM.get_record'``) with *args*.

        The session reference is added here; Python ints are sent as XAPI's
        decimal strings. Returns the decoded value.

        :raises XAPIError: (or its subclass for the code) XAPI refused.
        :raises XAPIConnectionError: the host could not be reached.
        :raises XAPIClosed: :meth:`close` was called.
        """
        return self.call_with_timeout(self.call_timeout, method, *args)

    def call_with_timeout(self, timeout: Optional[float], method: str,
                          *args):
        """:meth:`call` with an explicit socket timeout (long polls)."""
        self._record(method, args)
        try:
            wire_args = [to_wire(a) for a in args]
        except TypeError as exc:
            raise TypeError('%s: %s' % (method, exc)) from None
        debug = LOG.isEnabledFor(logging.DEBUG)
        if debug:
            LOG.debug('XAPI call %s', redact.format_call(method, args))
        attempt = 0
        relogged = False
        redirects = 0
        failed_over = False
        while True:
            sess = self._pool.acquire()
            try:
                result = sess.invoke(method, wire_args, timeout)
            except errors.SessionInvalid:
                self._pool.discard(sess)
                self._forget(sess)
                if relogged:
                    raise
                relogged = True
                LOG.info('XAPI session expired during %s; logging in again',
                         method)
                # NOTE(xapi): what expired one session (toolstack restart,
                # host reboot, idle expiry) usually expired the idle ones
                # too; drop them so the retry runs on a fresh login rather
                # than on another dead session.
                for stale in self._pool.drain_idle():
                    self.logout(stale)
                continue
            except errors.HostIsSlave as exc:
                # The host we talk to was demoted while we were connected.
                self._pool.discard(sess)
                self.logout(sess)
                if redirects >= MAX_REDIRECTS:
                    raise
                redirects += 1
                self._redirect(sess.url, exc.master_address)
                continue
            except errors.XAPIError as exc:
                self._release(sess)
                if (exc.code in constants.TRANSIENT_ERRORS
                        and attempt < self.max_retries):
                    attempt += 1
                    self._log_retry(method, exc, attempt)
                    time.sleep(self.retry_interval)
                    continue
                raise
            except xsession.CONNECTION_ERRORS as exc:
                self._release(sess)
                if self._retryable_connection_error(method, exc) and \
                        attempt < self.max_retries:
                    attempt += 1
                    self._log_retry(method, exc, attempt)
                    time.sleep(self.retry_interval)
                    continue
                # NOTE(xapi): refused/unreachable means nothing was sent:
                # safe to send again to a new master.
                if not failed_over and _unreachable(exc) and \
                        self._failover(sess.url):
                    failed_over = True
                    continue
                raise errors.XAPIConnectionError(
                    xtransport.redact_url(sess.url), method, exc) from exc
            except BaseException:
                # Interrupted mid-call (e.g. a killed greenthread): the HTTP
                # connection may hold half an answer; never reuse it.
                sess.close_connection()
                self._release(sess)
                raise
            self._release(sess)
            return result

    @staticmethod
    def _retryable_connection_error(method: str, exc: BaseException) -> bool:
        if isinstance(exc, ConnectionRefusedError):
            return True     # nothing was sent
        if isinstance(exc, (ConnectionResetError, BrokenPipeError,
                            ConnectionAbortedError,
                            http.client.RemoteDisconnected)):
            # NOTE(xapi): the message may have run before the connection
            # dropped; resend only what cannot change state twice.
            return _is_read_only(method)
        return False

    def _log_retry(self, method: str, exc: BaseException,
                   attempt: int) -> None:
        LOG.warning('XAPI %(method)s failed (%(exc)s); retry %(n)d of '
                    '%(max)d in %(interval)ss',
                    {'method': method, 'exc': exc, 'n': attempt,
                     'max': self.max_retries,
                     'interval': self.retry_interval})

    # ------------------------------------------------------------- tasks

    def start_async(self, method: str, *args) -> str:
        """Start ``Async.<method>`` and return its task reference."""
        return self.call('Async.' + method, *args)

    def wait_task(self, task: str, timeout: Optional[float] = None,
                  method: str = '?'):
        """Wait for *task*; return its decoded result, destroy it.

        On timeout the task is cancelled and :class:`XAPITaskTimeout`
        raised; a failed task raises the XAPIError of its ``error_info``.
        """
        return tasks.wait(self, task, method,
                          self.task_timeout if timeout is None else timeout)

    def call_async(self, method: str, *args, timeout: Optional[float] = None):
        """``Async.<method>(*args)`` and wait for its result.

        :param timeout: seconds (default: task_timeout).
        """
        task = self.start_async(method, *args)
        return self.wait_task(task, timeout, method=method)

    # ------------------------------------------------------- HTTP handlers

    def http_put(self, path: str, fileobj, length: int, **query) -> int:
        """Stream *length* bytes of *fileobj* to an XAPI HTTP handler
        (``/import_raw_vdi``, vdi=REF, format='raw'); returns bytes sent."""
        return handlers.transfer(self, 'PUT', path, query, send=fileobj,
                                 length=length)

    def http_get(self, path: str, sink, **query) -> int:
        """Stream an XAPI HTTP handler's answer (``/export_raw_vdi``) into
        *sink*; returns bytes received."""
        return handlers.transfer(self, 'GET', path, query, sink=sink)

    # ------------------------------------------------------------- cache

    def start_cache(self, classes: Optional[Sequence[str]] = None,
                    poll_timeout: float = 30.0, **kwargs):
        """Start (once) and return the ``event.from`` record cache."""
        from nova_xen_stubdom.xapi import cache as xcache
        if self._pool.closed:
            raise errors.XAPIClosed('XAPI client is closed')
        with self._lock:
            if self._cache is None:
                self._cache = xcache.RecordCache(self, classes,
                                                 poll_timeout=poll_timeout,
                                                 **kwargs)
                created = True
            else:
                created = False
        if created:
            self._cache.start()
        return self._cache

    @property
    def cache(self):
        """The record cache, or None before :meth:`start_cache`."""
        return self._cache

    # ------------------------------------------------------------- close

    def close(self, wait: float = 5.0) -> None:
        """Stop the cache and log out every session; idempotent.

        :param wait: seconds to wait for in-flight calls to hand their
            sessions back before returning (those are logged out when they
            come back anyway).
        """
        if self._cache is not None:
            self._cache.stop()
        for sess in self._pool.close():
            self.logout(sess)
        deadline = time.monotonic() + wait
        while self._pool.in_use and time.monotonic() < deadline:
            time.sleep(0.05)
        with self._lock:
            left = list(self._live)
        for sess in left:
            # Sessions still out after *wait*: log them out from here; the
            # holder's call then fails with SESSION_INVALID.
            self.logout(sess, in_use=True)

    def __enter__(self) -> 'XAPIClient':
        return self

    def __exit__(self, *exc) -> None:
        self.close()
