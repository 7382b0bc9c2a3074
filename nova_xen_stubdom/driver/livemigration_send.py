"""Live migration, source side: the agent's pre-copy send and its outcome.

The source's agent runs the migration (rounds, downtime, switch-over);
this side starts it, polls it, reports progress into Nova's migration
record, and ends with Nova's *post_method* or *recover_method*.  An
unconfirmed switch-over is settled by the destination's own word only
(:meth:`LiveMigrationSender._settle_unknown`).
"""
import json
import sys
import threading
import time
from typing import Dict, Optional, Tuple

from oslo_log import log as logging

from nova.compute import utils as compute_utils
from nova import exception

from nova_xen_stubdom.driver import common
from nova_xen_stubdom.driver import constants as dc
from nova_xen_stubdom.driver import exceptions as dexc
from nova_xen_stubdom.driver import migrationutils as mu
from nova_xen_stubdom.driver import vmlookup
from nova_xen_stubdom.xapi import errors as xapi_errors

LOG = logging.getLogger(__name__)

#: poll interval of a running live migration (s)
POLL = 0.1


class LiveMigrationSender(common.InstanceOps):
    """Nova's live_migration and its abort/force-complete, on the
    source."""

    def __init__(self, ctx, vmops) -> None:
        super().__init__(ctx, vmops)
        #: instance uuid -> send job id on this host's agent (abort
        #: and force-complete arrive on other threads)
        self._sending: Dict[str, str] = {}
        self._lock = threading.Lock()

    def live_migration(self, context, instance, dest, post_method,
                       recover_method, block_migration=False,
                       migrate_data=None) -> None:
        """Run the agent's pre-copy migration; report progress; then call
        *post_method* (switch-over confirmed) or *recover_method*."""
        try:
            job = self._start_send(instance, migrate_data)
        except Exception as exc:
            LOG.error('live migration could not start: %s', exc,
                      instance=instance)
            recover_method(context, instance, dest, migrate_data)
            return
        state, error = self._watch(instance, job, migrate_data)
        if state == 'unknown':
            # "go" was sent and "running" never came back: only the
            # destination's own word decides (see _settle_unknown)
            try:
                state, error = self._settle_unknown(instance, job, dest,
                                                    migrate_data, error)
            except dexc.SwitchoverUnknown as exc:
                with self._lock:
                    self._sending.pop(instance.uuid, None)
                # Nova's manager sets ERROR when live_migration raises
                # but records no fault: the fault is what tells the
                # operator which two hosts to look at
                compute_utils.add_instance_fault_from_exc(
                    context, instance, exc, sys.exc_info())
                raise
        try:
            self._ctx.call_plugin('migrate_forget', id=job)
        except Exception:
            pass
        with self._lock:
            self._sending.pop(instance.uuid, None)
        if state == 'completed':
            post_method(context, instance, dest, block_migration,
                        migrate_data)
            return
        LOG.error('live migration %(state)s: %(error)s',
                  {'state': state, 'error': error}, instance=instance)
        if state == 'aborted':
            recover_method(context, instance, dest, migrate_data,
                           migration_status='cancelled')
        else:
            recover_method(context, instance, dest, migrate_data)

    def _settle_unknown(self, instance, job: str, dest: str, migrate_data,
                        error: str) -> Tuple[str, str]:
        """The switch-over's outcome after an unconfirmed "go".

        The destination's receive job (asked through its own XAPI, a
        second path) is the only witness: ``running`` -- the guest runs
        there -- completes the migration; ``failed``/``cancelled`` -- it
        never ran there -- resumes the source and rolls back.  Anything
        else (destination unreachable, job lost, no answer in time) is an
        outcome nobody can know from here: both copies stay exactly as they
        are (the source paused), the job stays in the source's journal, and
        the instance goes to ERROR with a fault naming both hosts (Nova's
        manager sets ERROR when the driver raises; see
        doc/source/operations.rst for the operator's procedure).
        """
        seen = self._dest_state(migrate_data)
        if seen == 'running':
            LOG.warning('switch-over unconfirmed on the source, but the '
                        'destination runs the guest: completing',
                        instance=instance)
            return 'completed', ''
        if seen in ('failed', 'cancelled'):
            try:
                self._ctx.call_plugin('migrate_resume_source', id=job)
            except Exception as exc:
                reason = ('%s reports the guest never ran there, but '
                          'resuming it here failed: %s' % (dest, exc))
            else:
                return 'failed', ('%s; the destination reports the guest '
                                  'never ran there, resumed on the source'
                                  % error)
        else:
            reason = ('%s cannot tell whether the guest runs there (%s)'
                      % (dest, seen or 'no answer'))
        # Nova keeps a fault's first 255 characters: what the operator
        # needs to act on comes first, the details last
        msg = ('source job %(job)s: "go" sent from %(src)s to %(dst)s, '
               'unconfirmed; %(why)s. Both copies kept, the guest paused on '
               '%(src)s: see "Unknown switch-over" in the operations guide. '
               'Detail: %(err)s' % {'src': instance.host, 'dst': dest,
                                    'err': error, 'why': reason, 'job': job})
        LOG.error(msg, instance=instance)
        raise dexc.SwitchoverUnknown(reason=msg)

    def _start_send(self, instance, migrate_data) -> str:
        found = vmlookup.guest_record(self._ctx, instance)
        if found is None:
            raise exception.InstanceNotFound(instance_id=instance.uuid)
        conf = self._conf
        out = self._ctx.call_plugin(
            'migrate_send', guest_vm_uuid=found[1]['uuid'],
            address=migrate_data.dest_address, port=migrate_data.dest_port,
            key=migrate_data.migration_key,
            # the destination's TLS certificate must name this host
            dest_host_uuid=migrate_data.dest_host_uuid,
            downtime_ms=conf.live_migration_downtime_ms,
            max_rounds=conf.live_migration_max_rounds,
            stall_rounds=conf.live_migration_stall_rounds,
            max_mem_factor=conf.live_migration_max_mem_factor,
            bandwidth_mbps=conf.live_migration_bandwidth_mbps,
            xbzrle_cache_mb=conf.live_migration_xbzrle_cache_mb,
            confirm_timeout=conf.live_migration_confirm_timeout,
            device_state_timeout=conf.device_state_timeout,
            device_state_disk_mb=conf.device_state_disk_mb)
        with self._lock:
            self._sending[instance.uuid] = out['id']
        return out['id']

    def _watch(self, instance, job: str, migrate_data) -> Tuple[str, str]:
        migration = getattr(migrate_data, 'migration', None) \
            if migrate_data is not None and \
            migrate_data.obj_attr_is_set('migration') else None
        last_report = 0.0
        failures = 0
        while True:
            try:
                st = self._ctx.call_plugin('migrate_status', id=job)
                failures = 0
            except xapi_errors.XAPIClosed:
                # this compute service is stopping: the agent's job stays
                # until it ends; nothing more can be reported from here
                return 'failed', 'nova-compute is stopping'
            except Exception as exc:
                # XAPI restarting under us: the agent keeps migrating
                failures += 1
                if failures > 50:
                    return 'failed', 'lost contact with the agent: %s' % exc
                LOG.warning('migration status unavailable (%s); retrying',
                            exc, instance=instance)
                time.sleep(0.5)
                continue
            now = time.monotonic()
            done = st['state'] != 'running'
            if migration is not None and (
                    done or now - last_report >=
                    self._conf.live_migration_progress_interval):
                last_report = now
                self._report(instance, migration, st.get('progress') or {})
            if done:
                return st['state'], st.get('error') or ''
            time.sleep(POLL)

    @staticmethod
    def _report(instance, migration, progress: dict) -> None:
        """Progress into Nova's migration record, as libvirt reports it."""
        try:
            migration.memory_total = progress.get('memory_total', 0)
            migration.memory_processed = progress.get('memory_processed', 0)
            migration.memory_remaining = progress.get('memory_remaining', 0)
            migration.save()
        except Exception as exc:
            LOG.warning('could not record migration progress: %s', exc,
                        instance=instance)

    def _dest_state(self, migrate_data) -> Optional[str]:
        """The destination's receive job state once it has settled
        (``running``, ``failed``, ``cancelled`` or ``unknown``), or None
        when the destination cannot be asked or does not settle within
        ``live_migration_confirm_timeout``."""
        deadline = time.monotonic() + self._conf.live_migration_confirm_timeout
        while True:
            try:
                state = self._receive_state(migrate_data)
            except Exception as exc:
                LOG.warning('could not ask the destination: %s', exc)
                state = None
            if state not in (None, 'waiting') or \
                    time.monotonic() >= deadline:
                return None if state == 'waiting' else state
            time.sleep(POLL)

    def _receive_state(self, migrate_data) -> Optional[str]:
        host = mu.host_by_uuid(self._ctx, migrate_data.dest_host_uuid)
        for rec in self._call('VM.get_all_records').values():
            oc = rec.get('other_config') or {}
            if rec.get('resident_on') == host and \
                    oc.get(dc.OC_ROLE) == mu.ROLE_INCOMING_GUEST and \
                    oc.get(mu.OC_RECEIVE_JOB):
                out = json.loads(self._call(
                    'host.call_plugin', host, dc.AGENT_PLUGIN,
                    'migrate_receive_status', {'id': oc[mu.OC_RECEIVE_JOB]}))
                return out.get('state')
        return None

    def _running_job(self, instance) -> str:
        """The send job of *instance*'s migration in flight from here."""
        with self._lock:
            job = self._sending.get(instance.uuid)
        if job is None:
            raise exception.NoActiveMigrationForInstance(
                instance_id=instance.uuid)
        return job

    def live_migration_abort(self, instance) -> None:
        self._ctx.call_plugin('migrate_abort', id=self._running_job(instance))

    def live_migration_force_complete(self, instance) -> None:
        self._ctx.call_plugin('migrate_force_complete',
                              id=self._running_job(instance))
