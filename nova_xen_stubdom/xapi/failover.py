"""Finding the pool master again when it stops answering.

A client remembers the URLs of the pool's hosts (``host.address``, read
once at login). If the master refuses connections (it died, or HA / an
operator promoted another host), each other host is asked: a login that
succeeds means that host is the master now; ``HOST_IS_SLAVE`` names the
master. This is how XAPI's own tools find a moved master.
"""
from typing import List, Optional

from oslo_log import log as logging

from nova_xen_stubdom.xapi import errors
from nova_xen_stubdom.xapi import session as xsession
from nova_xen_stubdom.xapi import transport as xtransport

LOG = logging.getLogger(__name__)


def pool_host_urls(client, sess) -> Optional[List[str]]:
    """URLs of every host of *sess*'s pool, or None if they cannot be read.
    """
    client._record('host.get_all_records', [])
    try:
        records = sess.invoke('host.get_all_records', [],
                              client.call_timeout)
    except (errors.XAPIException,) + xsession.CONNECTION_ERRORS as exc:
        LOG.debug('Could not list the pool hosts of %(url)s: %(exc)s',
                  {'url': xtransport.redact_url(sess.url), 'exc': exc})
        return None
    urls = []
    for rec in (records or {}).values():
        try:
            urls.append(xtransport.master_url(sess.url, rec.get('address')))
        except (ValueError, TypeError):
            continue
    return urls


def _ask(client, member: str, dead_url: str) -> Optional[str]:
    """Which host *member* says is the master (None: no usable answer)."""
    probe = xsession.XAPISession(member, client._ssl_context)
    args = client._login_args()
    try:
        client._record('session.login_with_password', args)
        try:
            probe.ref = probe.raw('session.login_with_password', args,
                                  client.login_timeout)
        except errors.HostIsSlave as exc:
            try:
                new = xtransport.master_url(member, exc.master_address)
            except ValueError:
                return None
            return None if new == dead_url else new
        except (errors.XAPIException,) + xsession.CONNECTION_ERRORS:
            return None
        # It took the login: it is the master now. The probe session is
        # not kept; the client logs in properly.
        client._record('session.logout', [])
        try:
            probe.invoke('session.logout', [], client.login_timeout)
        except (errors.XAPIException,) + xsession.CONNECTION_ERRORS:
            pass
        return member
    finally:
        probe.close_connection()


def find_master(client, members: List[str],
                dead_url: str) -> Optional[str]:
    """URL of the current master according to the first of *members*
    that answers, or None."""
    for member in members:
        new = _ask(client, member, dead_url)
        if new is not None:
            return new
    return None
