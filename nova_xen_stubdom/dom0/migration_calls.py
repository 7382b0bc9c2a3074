"""Agent plugin functions for save/restore and live migration.

Reached through XAPI's ``host.call_plugin(host, 'nova_xen_stubdom', fn,
args)`` (string arguments, JSON results).  A live migration runs on an agent
thread; the driver starts it, polls its status (progress for Nova's
migration record) and can abort or force-complete it.

Keys (per migration, per save image) arrive wrapped (``key_wrap``, see
:mod:`.keywrap` and ``key_offer``): a plain ``key`` argument would stand on
the plugin's command line and is refused.

Functions: ``key_offer``, ``migrate_receive``, ``migrate_receive_status``,
``migrate_receive_cancel``, ``migrate_send``, ``migrate_status``,
``migrate_abort``, ``migrate_force_complete``, ``migrate_forget``,
``save_image``, ``verify_image``, ``restore_image``.
"""
import json
import logging
import threading
import uuid
import weakref
from typing import Dict

from nova_xen_stubdom.dom0 import errors
from nova_xen_stubdom.dom0 import job_journal
from nova_xen_stubdom.dom0 import keywrap
from nova_xen_stubdom.dom0 import live_migration as migration
from nova_xen_stubdom.dom0 import migration_channel as wire
from nova_xen_stubdom.dom0 import migration_target
from nova_xen_stubdom.dom0 import migration_tls
from nova_xen_stubdom.dom0 import device_state as devstate
from nova_xen_stubdom.dom0 import records
from nova_xen_stubdom.dom0 import registry as plugin
from nova_xen_stubdom.dom0 import saverestore

LOG = logging.getLogger(__name__)
MiB = 1 << 20


class MigrationAgentError(errors.AgentError):
    msg_fmt = '%(reason)s'
    code = 'MIGRATION_FAILED'


class ImageRefused(errors.AgentError):
    msg_fmt = '%(reason)s'
    code = 'IMAGE_REFUSED'


class _Job:
    def __init__(self, kind: str, obj) -> None:
        self.kind = kind
        self.obj = obj
        self.state = 'running'
        self.error = None
        self.thread = None


#: agent -> {job id: _Job}
_JOBS: 'weakref.WeakKeyDictionary' = weakref.WeakKeyDictionary()
_JOBS_LOCK = threading.Lock()


def _jobs(agent) -> Dict[str, _Job]:
    with _JOBS_LOCK:
        return _JOBS.setdefault(agent, {})


def _lost(agent, args, kind: str):
    """The journal entry of a job a previous daemon was running, or None."""
    journal = getattr(agent, 'journal', None)
    job_id = args.get('id', '')
    if journal is None or not job_id:
        return None
    try:
        entry = journal.read(job_id)
    except ValueError:
        return None
    return entry if entry and entry.get('kind') == kind else None


def _journal(agent, job_id: str, **fields) -> None:
    journal = getattr(agent, 'journal', None)
    if journal is None:
        return
    try:
        journal.write(job_id, **fields)
    except OSError:
        LOG.exception('cannot journal job %s', job_id)


def _job(agent, args, kind: str) -> _Job:
    job = _jobs(agent).get(args.get('id', ''))
    lost = _lost(agent, args, kind) if job is None else None
    if lost is not None:
        raise MigrationAgentError(reason='%s job %s: %s (%s)' % (
            kind, lost['id'], lost.get('state'), lost.get('error')))
    if job is None or job.kind != kind:
        raise errors.InvalidArgument(name='id', value=args.get('id'),
                                     reason='no such %s job on this host'
                                     % kind)
    return job


def _arg(args, name: str) -> str:
    try:
        return args[name]
    except KeyError:
        raise errors.InvalidArgument(name=name, value=None,
                                     reason='required')


#: agent -> its key offers (keywrap.Offers)
_OFFERS: 'weakref.WeakKeyDictionary' = weakref.WeakKeyDictionary()


def _offers(agent) -> keywrap.Offers:
    with _JOBS_LOCK:
        return _OFFERS.setdefault(agent, keywrap.Offers())


@plugin.register('key_offer')
def key_offer(agent, args) -> str:
    """An ephemeral Diffie-Hellman offer for wrapping one key
    (:mod:`.keywrap`): ``{"offer": id, "pub": hex}``."""
    return json.dumps(_offers(agent).offer())


def _key(agent, args) -> bytes:
    if 'key' in args:
        raise errors.InvalidArgument(
            name='key', value='***',
            reason="a key in plugin arguments stands on the plugin's command "
                   'line: pass key_wrap (key_offer, then keywrap.wrap)')
    try:
        key = _offers(agent).unwrap(_arg(args, 'key_wrap'))
    except keywrap.KeyWrapError as e:
        raise errors.InvalidArgument(name='key_wrap', value='***',
                                     reason=str(e))
    if len(key) < 16:
        raise errors.InvalidArgument(name='key', value='***',
                                     reason='shorter than 128 bits')
    return key


def _int(args, name: str, default: int) -> int:
    try:
        return int(args.get(name, default))
    except ValueError:
        raise errors.InvalidArgument(name=name, value=args.get(name),
                                     reason='not an integer')


def _guest(agent, args, paused=None):
    vm_uuid = _arg(args, 'guest_vm_uuid')
    info = agent.domain_by_vm_uuid(vm_uuid)
    if info is None:
        raise MigrationAgentError(reason='VM %s has no domain on host %s'
                                  % (vm_uuid, agent.host_uuid))
    if paused is not None and info.paused != paused:
        raise MigrationAgentError(reason='domain %d of VM %s is %s'
                                  % (info.domid, vm_uuid, 'paused'
                                     if info.paused else 'running'))
    return info


def _conf(agent):
    """The agent's defaults for settings a call does not carry."""
    return agent.config


def _tls(conf) -> migration_tls.TlsConfig:
    """This host's TLS settings for migration streams (agent.conf)."""
    try:
        return migration_tls.TlsConfig(
            conf.migration_tls_cert, conf.migration_tls_ca,
            keyfile=conf.migration_tls_key,
            version=conf.migration_tls_version)
    except migration_tls.TlsError as e:
        raise MigrationAgentError(reason=str(e))


# -- live migration: destination --
@plugin.register('migrate_receive')
def migrate_receive(agent, args) -> str:
    """Listen for the guest of ``guest_vm_uuid`` (a paused, fresh domain
    the driver started for it) with ``key``; returns id, address, port."""
    conf = _conf(agent)
    dest = _guest(agent, args, paused=True)
    backend = agent.backend
    timeout = _int(args, 'device_state_timeout', conf.device_state_timeout)

    def prepare(info: dict) -> int:
        if int(info.get('max_pfn', 0)) > dest.max_pfn:
            raise MigrationAgentError(
                reason='incoming guest has %s pages, the domain prepared '
                       'for it %d' % (info.get('max_pfn'), dest.max_pfn))
        return dest.domid

    try:
        address = wire.check_advertised(
            args.get('listen_address') or conf.agent_listen_address,
            conf.migration_allow_loopback)
    except wire.WireError as e:
        raise errors.InvalidArgument(name='listen_address',
                                     value=args.get('listen_address'),
                                     reason=str(e))
    target = migration_target.LiveMigrationTarget(
        backend, _key(agent, args), prepare_domain=prepare,
        restore_device_state=lambda domid, state, xs: devstate.restore(
            backend, domid, state, timeout),
        # the domain belongs to XAPI: the driver's rollback removes it
        destroy_domain=lambda domid: None,
        listen_address=address,
        port_min=_int(args, 'port_min', conf.agent_port_min),
        port_max=_int(args, 'port_max', conf.agent_port_max),
        accept_timeout=_int(args, 'accept_timeout',
                            conf.live_migration_connect_timeout),
        go_timeout=_int(args, 'confirm_timeout',
                        conf.live_migration_confirm_timeout),
        tls=_tls(conf),
        handshake_timeout=conf.migration_handshake_timeout,
        max_pending=conf.migration_max_pending,
        on_phase=lambda phase: _journal(agent, job_id, phase=phase))
    job_id = str(uuid.uuid4())
    try:
        address, port = target.start()
    except (migration.MigrationError, wire.WireError) as e:
        raise MigrationAgentError(reason=str(e))
    _jobs(agent)[job_id] = _Job('receive', target)
    _journal(agent, job_id, kind='receive', state='running',
             domid=dest.domid)
    LOG.info('receiving VM %(vm)s into domain %(d)d on %(a)s:%(p)d',
             {'vm': args['guest_vm_uuid'], 'd': dest.domid, 'a': address,
              'p': port})
    return json.dumps({'id': job_id, 'address': address, 'port': port})


@plugin.register('migrate_receive_status')
def migrate_receive_status(agent, args) -> str:
    lost = None if args.get('id', '') in _jobs(agent) else \
        _lost(agent, args, 'receive')
    if lost is not None:
        # what recovery made of it: "running" when the guest runs here,
        # "unknown" when "go" arrived but whether it ran cannot be told
        return json.dumps({'state': lost.get('state'),
                           'domid': lost.get('domid'), 'paused': True,
                           'error': lost.get('error'), 'pages': 0})
    target = _job(agent, args, 'receive').obj
    return json.dumps(records.asdict(target.result))


@plugin.register('migrate_receive_cancel')
def migrate_receive_cancel(agent, args) -> str:
    job = _jobs(agent).pop(args.get('id', ''), None)
    if _lost(agent, args, 'receive') is not None:
        agent.journal.remove(args['id'])
    if job is None or job.kind != 'receive':
        return json.dumps({'state': 'unknown'})
    job.obj.cancel()
    return json.dumps(records.asdict(job.obj.result))


# -- live migration: source --
@plugin.register('migrate_send')
def migrate_send(agent, args) -> str:
    """Start sending the guest ``guest_vm_uuid`` (running, or paused:
    it stays paused) to ``address``:``port`` with ``key``; returns the job
    id."""
    conf = _conf(agent)
    src_info = _guest(agent, args)
    backend = agent.backend
    domid = src_info.domid
    dev_timeout = _int(args, 'device_state_timeout',
                       conf.device_state_timeout)
    saved = {'device': False}
    job_id = str(uuid.uuid4())

    def device_state() -> bytes:
        _journal(agent, job_id, phase='device-saved')
        state = devstate.save(backend, domid,
                              _int(args, 'device_state_disk_mb',
                                   conf.device_state_disk_mb) * MiB,
                              dev_timeout)
        saved['device'] = True
        return state

    def device_resume() -> None:
        if saved['device']:
            devstate.resume(backend, domid, dev_timeout)

    source = migration.LiveMigrationSource(
        backend, domid, _arg(args, 'address'), _int(args, 'port', 0),
        _key(agent, args), device_state=device_state,
        device_resume=device_resume,
        downtime_ms=_int(args, 'downtime_ms',
                         conf.live_migration_downtime_ms),
        max_rounds=_int(args, 'max_rounds', conf.live_migration_max_rounds),
        bandwidth_bytes=_int(args, 'bandwidth_mbps',
                             conf.live_migration_bandwidth_mbps) * MiB,
        xbzrle_cache_pages=_int(args, 'xbzrle_cache_mb',
                                conf.live_migration_xbzrle_cache_mb)
        * MiB // 4096,
        confirm_timeout=_int(args, 'confirm_timeout',
                             conf.live_migration_confirm_timeout),
        stall_rounds=_int(args, 'stall_rounds',
                          conf.live_migration_stall_rounds),
        max_mem_factor=float(args.get('max_mem_factor',
                                      conf.live_migration_max_mem_factor)),
        on_phase=lambda phase: _journal(agent, job_id, phase=phase),
        tls=_tls(conf),
        # the destination's certificate must name the host Nova chose
        peer_identity=_arg(args, 'dest_host_uuid'))
    job = _Job('send', source)

    def run() -> None:
        try:
            source.run()
            job.state = 'completed'
        except migration.MigrationAborted as e:
            job.state, job.error = 'aborted', str(e)
        except migration.SwitchoverUnknown as e:
            job.state, job.error = 'unknown', str(e)
        except Exception as e:
            LOG.warning('live migration of domain %(d)d failed: %(e)s',
                        {'d': domid, 'e': e})
            job.state, job.error = 'failed', str(e) or type(e).__name__
        _journal(agent, job_id, state=job.state, error=job.error)

    job.thread = threading.Thread(target=run, daemon=True,
                                  name='migrate-send-%d' % domid)
    _jobs(agent)[job_id] = job
    _journal(agent, job_id, kind='send', state='running', domid=domid,
             phase='precopy')
    job.thread.start()
    return json.dumps({'id': job_id})


@plugin.register('migrate_status')
def migrate_status(agent, args) -> str:
    lost = None if args.get('id', '') in _jobs(agent) else \
        _lost(agent, args, 'send')
    if lost is not None:
        # a previous daemon ran it: what recovery made of it
        return json.dumps({'state': lost.get('state'),
                           'error': lost.get('error'), 'progress': {},
                           'stats': {}})
    job = _job(agent, args, 'send')
    src = job.obj
    return json.dumps({'state': job.state, 'error': job.error,
                       'progress': records.asdict(src.progress),
                       'stats': src.stats.as_dict()})


@plugin.register('migrate_abort')
def migrate_abort(agent, args) -> str:
    job = _job(agent, args, 'send')
    job.obj.abort()
    return json.dumps({'state': job.state})


@plugin.register('migrate_force_complete')
def migrate_force_complete(agent, args) -> str:
    job = _job(agent, args, 'send')
    job.obj.force_complete()
    return json.dumps({'state': job.state})


@plugin.register('migrate_resume_source')
def migrate_resume_source(agent, args) -> str:
    """Resume the source guest of a send job whose switch-over outcome
    was ``unknown``, once the caller has the destination's positive word
    that the guest never ran there (its receive job ``failed``/
    ``cancelled``).  Refused for a job in any other state."""
    job_id = args.get('id', '')
    job = _jobs(agent).get(job_id)
    lost = _lost(agent, args, 'send') if job is None else None
    if job is not None and job.kind == 'send':
        state, domid = job.state, job.obj.domid
    elif lost is not None:
        state, domid = lost.get('state'), lost.get('domid')
    else:
        raise errors.InvalidArgument(name='id', value=job_id,
                                     reason='no such send job on this host')
    if state != 'unknown' or domid is None:
        raise MigrationAgentError(reason='send job %s is %s: only a job '
                                  'whose switch-over is unknown is resumed '
                                  'here' % (job_id, state))
    conf = _conf(agent)
    job_journal.undo_send(
        agent.backend, int(domid), 'device-saved',
        lambda d: devstate.resume(agent.backend, d,
                                  conf.device_state_timeout))
    error = 'the destination reported the guest never ran there; ' \
        'resumed on the source'
    if job is not None:
        job.state, job.error = 'failed', error
    _journal(agent, job_id, state='failed', error=error)
    LOG.warning('send job %(j)s: %(e)s (domain %(d)s)',
                {'j': job_id, 'e': error, 'd': domid})
    return json.dumps({'state': 'failed', 'domid': domid})


@plugin.register('migrate_forget')
def migrate_forget(agent, args) -> str:
    job = _jobs(agent).pop(args.get('id', ''), None)
    journal = getattr(agent, 'journal', None)
    if journal is not None and args.get('id'):
        try:
            journal.remove(args['id'])
        except ValueError:
            pass
    if job is not None and job.kind == 'receive':
        job.obj.cancel()
    return json.dumps({'forgotten': job is not None})


# -- save / restore (suspend / resume) --
def _image_path(agent, args) -> str:
    if args.get('path'):
        return args['path']
    vdi_path = getattr(agent.backend, 'vdi_path', None)
    if vdi_path is None:
        raise errors.InvalidArgument(name='vdi_uuid', value=args.get(
            'vdi_uuid'), reason='this backend cannot reach VDI contents')
    return vdi_path(_arg(args, 'vdi_uuid'))


@plugin.register('save_image')
def save_image(agent, args) -> str:
    """Save the running guest into the image at ``vdi_uuid``/``path``.

    The guest stays paused on success (the driver tears it down); on
    failure its device model and the guest run again.
    """
    conf = _conf(agent)
    info = _guest(agent, args)
    backend = agent.backend
    timeout = _int(args, 'device_state_timeout', conf.device_state_timeout)
    path = _image_path(agent, args)
    saved = {'device': False}
    # journaled so that a daemon killed mid-save lets the guest run again
    # (job_journal.recover); removed once this call has settled it
    job_id = 'save-%s' % info.vm_uuid

    def device_state() -> bytes:
        _journal(agent, job_id, phase='device-saving')
        state = devstate.save(backend, info.domid,
                              conf.device_state_disk_mb * MiB, timeout)
        saved['device'] = True
        return state

    with agent.lock(info.vm_uuid):
        _journal(agent, job_id, kind='save', state='running',
                 domid=info.domid, phase='saving',
                 paused_before=info.paused)
        try:
            # A VDI keeps its size (the stream ends at its END record); a
            # plain file is the image alone.
            with open(path, 'r+b' if args.get('vdi_uuid') else 'wb') as f:
                stats = saverestore.save_domain(
                    backend, info.domid, f, _key(agent, args), device_state)
        except Exception as e:
            if saved['device']:
                try:
                    devstate.resume(backend, info.domid, timeout)
                except Exception:
                    LOG.exception('device model of domain %d did not resume',
                                  info.domid)
            if isinstance(e, errors.AgentError):
                raise
            raise MigrationAgentError(reason='save of domain %d failed: %s'
                                      % (info.domid, e))
        finally:
            journal = getattr(agent, 'journal', None)
            if journal is not None:
                journal.remove(job_id)
    return json.dumps(records.asdict(stats))


@plugin.register('verify_image')
def verify_image(agent, args) -> str:
    """Check an image completely without touching any domain."""
    path = _image_path(agent, args)
    try:
        with open(path, 'rb') as f:
            c = saverestore.verify_image(f, _key(agent, args),
                                         args.get('expected_vm_uuid'))
    except saverestore.ImageError as e:
        raise ImageRefused(reason=str(e))
    except OSError as e:
        raise ImageRefused(reason='cannot read the save image: %s' % e)
    return json.dumps({'info': c.info,
                       'device_state_bytes': len(c.device_state or b'')})


@plugin.register('restore_image')
def restore_image(agent, args) -> str:
    """Restore into the paused fresh domain of ``guest_vm_uuid`` (its new
    stub domain running) and load the device state; the guest stays
    paused for the driver to unpause through XAPI."""
    conf = _conf(agent)
    info = _guest(agent, args, paused=True)
    path = _image_path(agent, args)
    with agent.lock(info.vm_uuid):
        try:
            with open(path, 'rb') as f:
                c = saverestore.restore_domain(
                    agent.backend, info.domid, f, _key(agent, args),
                    args.get('expected_vm_uuid'))
        except saverestore.ImageError as e:
            raise ImageRefused(reason=str(e))
        devstate.restore(agent.backend, info.domid, c.device_state,
                         _int(args, 'device_state_timeout',
                              conf.device_state_timeout))
    # pages written, and how many the fresh domain had no frame for
    return json.dumps({'domid': info.domid, 'info': c.info,
                       'pages': c.pages, 'populated': c.populated})


@plugin.register('undo_save')
def undo_save(agent, args) -> str:
    """After a successful ``save_image`` whose suspend could not be
    completed: the device model and the guest run again."""
    conf = _conf(agent)
    info = _guest(agent, args)
    with agent.lock(info.vm_uuid):
        devstate.resume(agent.backend, info.domid,
                        _int(args, 'device_state_timeout',
                             conf.device_state_timeout))
        if info.paused:
            agent.backend.unpause(info.domid)
    return json.dumps({'domid': info.domid})
