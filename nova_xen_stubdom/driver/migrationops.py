"""Suspend/resume, cold migration/resize and live migration.

XAPI no longer knows stub domains, so none of these can be left to
XAPI's own VM.pool_migrate / VM.resume: guest memory and CPU state move
through the dom0 agents' save/restore engine (a Xen migration stream v2,
authenticated), the device model's state through a disk attached to the
stub domain.  XAPI still accounts for every VM: the destination gets its own
guest and stub-domain VMs (``other_config`` role ``incoming-*`` until the
switch-over is confirmed, so lookups keep finding the source's), and the
source's are removed only once the destination runs the guest.

Live migration needs both hosts in one XAPI pool (the disks stay on the
pool's SR, as with XAPI's own pool migration); block migration and guests
with PCI pass-through devices are refused with a clear message.
"""
import json
import secrets
import sys
import threading
import time
from typing import Dict, Optional, Tuple

from oslo_log import log as logging
from oslo_utils import excutils

from nova.compute import utils as compute_utils
from nova import exception
from nova.i18n import _

from nova_xen_stubdom.dom0 import cpu_policy
from nova_xen_stubdom.driver import constants as dc
from nova_xen_stubdom.driver import exceptions as dexc
from nova_xen_stubdom.driver import guest_config
from nova_xen_stubdom.driver import pv_guests
from nova_xen_stubdom.driver import vmbuild
from nova_xen_stubdom.driver import vmops as vmops_mod
from nova_xen_stubdom.objects import migrate_data as md_obj
from nova_xen_stubdom.xapi import constants as xc
from nova_xen_stubdom.xapi import errors as xapi_errors

LOG = logging.getLogger(__name__)
MiB = 1 << 20

#: roles of the destination's VMs while a live migration is in flight
ROLE_INCOMING_GUEST = 'incoming-guest'
ROLE_INCOMING_STUBDOM = 'incoming-stubdom'
#: other_config key on the incoming guest: the receive job on its agent
OC_RECEIVE_JOB = 'nova_xen_stubdom_receive_job'
NULL_REF = 'OpaqueRef:NULL'
#: poll interval of a running live migration (s)
POLL = 0.1
#: role prefix and VDI name suffix of a cold migration's source, set aside
#: until confirm or revert
RESIZE_SOURCE = 'resize-source-'
RESIZE_SUFFIX = '.resize-source'
#: disk name (VDI name_label suffix, other_config) of suspend images
SUSPEND_DISK = 'suspend'
#: instance system_metadata key holding the suspend image's key (hex)
SMETA_IMAGE_KEY = 'xen_stubdom_image_key'
#: bytes of a per-migration / per-image key (the dom0 side wants at least
#: 16; the driver reaches dom0 only through XAPI, so it does not import the
#: dom0 code)
KEY_BYTES = 32


def new_key() -> bytes:
    """A fresh per-migration / per-image key."""
    return secrets.token_bytes(KEY_BYTES)


class OperationNotSupportedYet(NotImplementedError):
    def __init__(self, operation: str):
        super().__init__(
            _('%s is not implemented yet by the Xen stub-domain driver '
              '(nova-xen-stubdom)') % operation)


class MigrationOps:
    def __init__(self, ctx, vmops) -> None:
        self._ctx = ctx
        self._vmops = vmops
        #: instance uuid -> send job id on this host's agent
        self._sending: Dict[str, str] = {}
        self._lock = threading.Lock()

    @property
    def _conf(self):
        return self._ctx.conf.xen_stubdom

    def _call(self, method: str, *args):
        return self._ctx.call(method, *args)

    # -- helpers --
    def _find(self, instance, roles) -> Dict[str, Tuple[str, dict]]:
        """``role -> (ref, record)`` of the instance's VMs with one of
        *roles*, asked from XAPI (not the cache)."""
        out = {}
        for name in (instance.name, instance.name + dc.STUBDOM_SUFFIX):
            for ref in self._call('VM.get_by_name_label', name):
                rec = self._call('VM.get_record', ref)
                oc = rec.get('other_config') or {}
                if oc.get(dc.OC_NOVA_UUID) == instance.uuid and \
                        oc.get(dc.OC_ROLE) in roles:
                    out[oc[dc.OC_ROLE]] = (ref, rec)
        return out

    @staticmethod
    def _has_pci(instance) -> bool:
        devs = getattr(instance, 'pci_devices', None)
        if devs:
            return True
        reqs = getattr(instance, 'pci_requests', None)
        return bool(reqs and getattr(reqs, 'requests', None))

    def _refuse_pci(self, instance) -> None:
        if self._has_pci(instance):
            raise exception.MigrationPreCheckError(reason=_(
                'instance %s has PCI pass-through devices: Xen does not '
                'support live migration of guests with assigned devices '
                '(cold migration re-claims them on the destination)')
                % instance.uuid)

    def _host_record(self, host_ref: str) -> dict:
        return self._ctx.cache.get('host', host_ref) or self._call(
            'host.get_record', host_ref)

    def _host_by_uuid(self, uuid: str) -> str:
        try:
            return self._call('host.get_by_uuid', uuid)
        except xapi_errors.XAPIError:
            raise exception.MigrationPreCheckError(reason=_(
                'destination host %s is not in this host\'s XAPI pool: live '
                'migration needs both hosts in one pool') % uuid)

    # -- live migration: checks --
    def check_can_live_migrate_destination(self, context, instance,
                                           src_compute_info,
                                           dst_compute_info,
                                           block_migration=False,
                                           disk_over_commit=False):
        """On the destination: room, CPU vendor, no PCI, no block copy;
        answers this host's HVM maximum CPU policy for the source's
        check."""
        if block_migration:
            raise exception.MigrationPreCheckError(reason=_(
                'block migration is not supported: live migration keeps the '
                'disks on the pool\'s SR; retry without --block-migrate'))
        self._refuse_pci(instance)
        cfg = guest_config.resolve(instance.flavor, None)
        need = (cfg.memory_mb + cfg.stubdom_memory_mb) * MiB
        free = int(self._call('host.compute_free_memory',
                              self._ctx.host_ref))
        if free < need:
            raise exception.MigrationPreCheckError(reason=_(
                'destination host %(host)s has %(free)d MiB free, the guest '
                'and its stub domain need %(need)d MiB')
                % {'host': self._ctx.host_name, 'free': free // MiB,
                   'need': need // MiB})
        src_vendor = _cpu_vendor(src_compute_info)
        dst_vendor = _cpu_vendor(dst_compute_info)
        if src_vendor and dst_vendor and src_vendor != dst_vendor:
            raise exception.MigrationPreCheckError(reason=_(
                'CPU vendors differ (source %(s)s, destination %(d)s): the '
                'guest\'s CPU state cannot move') % {'s': src_vendor,
                                                     'd': dst_vendor})
        # the most this host can offer an HVM guest; the source compares
        # its guest's policy with it before anything is touched
        host_policy = self._ctx.call_plugin('host_cpu_policy')
        data = md_obj.XenStubdomLiveMigrateData(
            dest_host_uuid=self._ctx.host_uuid,
            dest_free_memory=free, guest_memory=cfg.memory_mb * MiB,
            dest_cpu_info=json.dumps(host_policy), block_migration=False)
        return data

    def cleanup_live_migration_destination_check(self, context,
                                                 dest_check_data):
        pass

    def check_can_live_migrate_source(self, context, instance,
                                      dest_check_data,
                                      block_device_info=None):
        """On the source: the guest runs (or is paused) here, same pool,
        no PCI."""
        self._refuse_pci(instance)
        if not isinstance(dest_check_data,
                          md_obj.XenStubdomLiveMigrateData):
            raise exception.MigrationPreCheckError(reason=_(
                'the destination is not a Xen stub-domain host'))
        self._host_by_uuid(dest_check_data.dest_host_uuid)
        found = self._vmops.guest_record(instance)
        state = found[1].get('power_state') if found else None
        if state not in (xc.POWER_STATE_RUNNING, xc.POWER_STATE_PAUSED):
            raise exception.MigrationPreCheckError(reason=_(
                'instance %(uuid)s is %(state)s, only a running or paused '
                'guest is live-migrated') % {'uuid': instance.uuid,
                                             'state': state})
        self._check_cpu_policy(instance, found[1], dest_check_data)
        pv_guests.check_live_migration(self._ctx, instance, found[1]['uuid'])
        return dest_check_data

    def _check_cpu_policy(self, instance, guest_rec: dict,
                          dest_check_data) -> None:
        """The destination must offer every CPU feature the guest sees
        (XAPI: Cpuid_helpers.assert_vm_is_compatible; Xen:
        x86_cpu_policies_are_compatible), or the move is refused here,
        before the source is touched."""
        try:
            dest = json.loads(dest_check_data.dest_cpu_info or '')
            host = cpu_policy.CpuPolicy.parse(bytes.fromhex(dest['cpuid']),
                                              bytes.fromhex(dest['msrs']))
        except (ValueError, TypeError, KeyError,
                cpu_policy.PolicyError) as e:
            raise exception.MigrationPreCheckError(reason=_(
                'the destination sent no usable CPU policy (%s): it may run '
                'an older driver; upgrade it first') % e)
        got = self._ctx.call_plugin('guest_cpu_policy',
                                    guest_vm_uuid=guest_rec['uuid'])
        guest = cpu_policy.CpuPolicy.parse(bytes.fromhex(got['cpuid']),
                                           bytes.fromhex(got['msrs']))
        why = cpu_policy.incompatibilities(guest, host)
        if why:
            raise exception.MigrationPreCheckError(reason=_(
                'destination host %(host)s cannot offer the CPU instance '
                '%(uuid)s sees: %(why)s; the guest stays on %(src)s') % {
                    'host': dest_check_data.dest_host_uuid,
                    'uuid': instance.uuid, 'why': '; '.join(why),
                    'src': self._ctx.host_name})

    # -- live migration: destination --
    def pre_live_migration(self, context, instance, block_device_info,
                           network_info, disk_info, migrate_data=None):
        """Build the guest's VMs here (guest paused, stub domain running)
        and start the agent's receiver with a fresh per-migration key."""
        if migrate_data is None:
            migrate_data = md_obj.XenStubdomLiveMigrateData()
        source = self._vmops.guest_record(instance)
        if source is None:
            raise exception.InstanceNotFound(instance_id=instance.uuid)
        built = vmops_mod.Built()
        with self._vmops._operation(instance):
            try:
                guest_uuid = self._build_incoming(instance, network_info,
                                                  source[1], built)
                key = new_key()
                recv = self._ctx.call_plugin(
                    'migrate_receive', guest_vm_uuid=guest_uuid,
                    key=key.hex(),
                    # routable from the source: the host's management
                    # address unless configured (the agent refuses
                    # loopback and 0.0.0.0 unless it allows them)
                    listen_address=(self._conf.agent_listen_address or
                                    self._ctx.host_record.get('address',
                                                              '')),
                    port_min=self._conf.agent_port_min,
                    port_max=self._conf.agent_port_max,
                    accept_timeout=self._conf.live_migration_connect_timeout,
                    confirm_timeout=self._conf.live_migration_confirm_timeout,
                    device_state_timeout=self._conf.device_state_timeout)
                self._call('VM.add_to_other_config', built.guest,
                           OC_RECEIVE_JOB, recv['id'])
            except Exception:
                with excutils.save_and_reraise_exception():
                    LOG.error('pre_live_migration failed; removing the '
                              'incoming VMs', instance=instance)
                    self._vmops._teardown(instance, built, raise_first=False)
        migrate_data.dest_address = recv['address']
        migrate_data.dest_port = int(recv['port'])
        migrate_data.migration_key = key.hex()
        migrate_data.dest_host_uuid = self._ctx.host_uuid
        LOG.info('ready to receive on %(a)s:%(p)s', {
            'a': recv['address'], 'p': recv['port']}, instance=instance)
        return migrate_data

    def _build_incoming(self, instance, network_info, source_rec: dict,
                        built) -> str:
        """Guest + stub-domain VMs on this host for the incoming guest,
        on the source's disks; the guest started paused."""
        cfg = guest_config.resolve(instance.flavor, None)
        host = self._ctx.host_ref
        grec = vmbuild.guest_record(instance, cfg, host)
        grec['other_config'][dc.OC_ROLE] = ROLE_INCOMING_GUEST
        guest = self._call('VM.create', grec)
        built.guest = guest
        built.guest_uuid = guest_uuid = self._call('VM.get_uuid', guest)
        srec = vmbuild.stubdom_record(instance, cfg, host, guest_uuid,
                                      self._conf.stubdom_kernel,
                                      self._conf.stubdom_ramdisk)
        srec['other_config'][dc.OC_ROLE] = ROLE_INCOMING_STUBDOM
        stub = self._call('VM.create', srec)
        built.stubdom = stub
        stub_uuid = self._call('VM.get_uuid', stub)
        self._call('VM.add_to_other_config', guest, dc.OC_STUBDOM, stub_uuid)
        # the same disks as the source guest (the pool's SR)
        for vbd in source_rec.get('VBDs') or []:
            vrec = self._call('VBD.get_record', vbd)
            if vrec.get('type') != 'Disk' or vrec.get('empty'):
                continue
            disk = self._call('VDI.get_other_config', vrec['VDI']).get(
                dc.OC_DISK, 'disk')
            self._vmops.attach_disk(built, vrec['VDI'], disk,
                                    int(vrec['userdevice']))
        vifs = []
        for index, vif in enumerate(network_info or []):
            net_ref = self._vmops._network_ref(vif)
            vifs.append((vif, net_ref))
            self._vmops.attach_nic(built, vif, net_ref, index)
        self._call_async('VM.start_on', stub, host, False, False)
        stub_domid = int(self._call('VM.get_domid', stub))
        self._ctx.call_plugin('link_stubdom', stubdom_domid=stub_domid,
                              guest_vm_uuid=guest_uuid,
                              config=self._vmops._dm_config(instance, cfg,
                                                            vifs))
        self._call_async('VM.start_on', guest, host, True, False)
        guest_domid = int(self._call('VM.get_domid', guest))
        self._vmops._wait_dm(instance, stub_domid, guest_domid)
        return guest_uuid

    def _call_async(self, method, *args):
        return self._ctx.call_async(method, *args)

    def post_live_migration_at_destination(self, context, instance,
                                           network_info,
                                           block_migration=False,
                                           block_device_info=None):
        """The guest runs here: its VMs become the instance's."""
        vms = self._find(instance, (ROLE_INCOMING_GUEST,
                                    ROLE_INCOMING_STUBDOM))
        guest = vms.get(ROLE_INCOMING_GUEST)
        stub = vms.get(ROLE_INCOMING_STUBDOM)
        if guest is None or stub is None:
            raise dexc.XenStubdomDriverError(reason=_(
                'the incoming VMs of instance %s are gone') % instance.uuid)
        job = (guest[1].get('other_config') or {}).get(OC_RECEIVE_JOB)
        left_paused = False
        if job:
            left_paused = bool(self._ctx.call_plugin(
                'migrate_receive_status', id=job).get('paused'))
            self._ctx.call_plugin('migrate_forget', id=job)
            self._call('VM.remove_from_other_config', guest[0],
                       OC_RECEIVE_JOB)
        self._call('VM.remove_from_other_config', guest[0], dc.OC_ROLE)
        self._call('VM.add_to_other_config', guest[0], dc.OC_ROLE,
                   dc.ROLE_GUEST)
        self._call('VM.remove_from_other_config', stub[0], dc.OC_ROLE)
        self._call('VM.add_to_other_config', stub[0], dc.OC_ROLE,
                   dc.ROLE_STUBDOM)
        # the agent let the domain run at the switch-over (unless it was
        # paused on the source); XAPI's record still says Paused (it was
        # started paused)
        if not left_paused and self._call(
                'VM.get_power_state', guest[0]) == xc.POWER_STATE_PAUSED:
            self._call('VM.unpause', guest[0])
        LOG.info('live migration finished here', instance=instance)

    def rollback_live_migration_at_destination(self, context, instance,
                                               network_info,
                                               block_device_info,
                                               destroy_disks=True,
                                               migrate_data=None):
        """Remove the incoming VMs (never the disks: they are the
        source's)."""
        self._remove_incoming(instance)

    def _remove_incoming(self, instance) -> None:
        """Cancel the receiver and remove the incoming VMs, wherever they
        are in the pool (Nova does not call the destination's rollback
        for drivers like this one: the source does it)."""
        vms = self._find(instance, (ROLE_INCOMING_GUEST,
                                    ROLE_INCOMING_STUBDOM))
        built = vmops_mod.Built()
        if ROLE_INCOMING_GUEST in vms:
            built.guest, rec = vms[ROLE_INCOMING_GUEST]
            built.guest_uuid = rec['uuid']
            job = (rec.get('other_config') or {}).get(OC_RECEIVE_JOB)
            host = rec.get('resident_on')
            if job and host and host != 'OpaqueRef:NULL':
                try:
                    self._call('host.call_plugin', host, dc.AGENT_PLUGIN,
                               'migrate_receive_cancel', {'id': job})
                except Exception as exc:
                    LOG.warning('cancelling the receiver failed: %s', exc,
                                instance=instance)
        if ROLE_INCOMING_STUBDOM in vms:
            built.stubdom = vms[ROLE_INCOMING_STUBDOM][0]
        if built.guest or built.stubdom:
            with self._vmops._operation(instance):
                self._vmops._teardown(instance, built, raise_first=True)
            LOG.info('incoming VMs of the failed live migration removed',
                     instance=instance)

    # -- live migration: source --
    def live_migration(self, context, instance, dest, post_method,
                       recover_method, block_migration=False,
                       migrate_data=None):
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
        found = self._vmops.guest_record(instance)
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
        host = self._host_by_uuid(migrate_data.dest_host_uuid)
        for rec in self._call('VM.get_all_records').values():
            oc = rec.get('other_config') or {}
            if rec.get('resident_on') == host and \
                    oc.get(dc.OC_ROLE) == ROLE_INCOMING_GUEST and \
                    oc.get(OC_RECEIVE_JOB):
                out = json.loads(self._call(
                    'host.call_plugin', host, dc.AGENT_PLUGIN,
                    'migrate_receive_status', {'id': oc[OC_RECEIVE_JOB]}))
                return out.get('state')
        return None

    def live_migration_abort(self, instance):
        with self._lock:
            job = self._sending.get(instance.uuid)
        if job is None:
            raise exception.NoActiveMigrationForInstance(
                instance_id=instance.uuid)
        self._ctx.call_plugin('migrate_abort', id=job)

    def live_migration_force_complete(self, instance):
        with self._lock:
            job = self._sending.get(instance.uuid)
        if job is None:
            raise exception.NoActiveMigrationForInstance(
                instance_id=instance.uuid)
        self._ctx.call_plugin('migrate_force_complete', id=job)

    def post_live_migration(self, context, instance, block_device_info,
                            migrate_data=None):
        """The destination runs the guest: remove its VMs here (the
        disks stay, the destination uses them)."""
        built = vmops_mod.Built()
        vms = self._find(instance, (dc.ROLE_GUEST, dc.ROLE_STUBDOM))
        guest = vms.get(dc.ROLE_GUEST)
        stub = vms.get(dc.ROLE_STUBDOM)
        if guest is not None and guest[1].get('resident_on') == \
                self._ctx.host_ref:
            built.guest, built.guest_uuid = guest[0], guest[1]['uuid']
        if stub is not None and stub[1].get('resident_on') == \
                self._ctx.host_ref:
            built.stubdom = stub[0]
        with self._vmops._operation(instance):
            self._vmops._teardown(instance, built, raise_first=False)
        LOG.info('source VMs removed after live migration',
                 instance=instance)

    def post_live_migration_at_source(self, context, instance,
                                      network_info):
        pass

    def rollback_live_migration_at_source(self, context, instance,
                                          migrate_data):
        """The agent already left the guest running here; remove what the
        destination prepared."""
        self._remove_incoming(instance)

    # -- suspend / resume / cold migration --
    def suspend(self, context, instance):
        """Save the guest (memory, CPU, device state) into a VDI we own,
        then halt guest and stub domain through XAPI.

        Not XAPI's VM.suspend: that drives xenopsd's own save, which asks
        a dom0 QEMU for the device state over QMP, and XAPI accepts no
        other image in its place (VM.set_suspend_VDI refuses a replacement
        whose content differs: SUSPEND_VDI_REPLACEMENT_IS_NOT_IDENTICAL).
        XAPI sees a Halted guest whose ``other_config`` names the image
        (``dc.OC_SUSPEND_IMAGE``); ``get_info`` reports it SUSPENDED.  See
        doc/source/xapi-behaviour.rst.
        """
        with self._vmops._operation(instance):
            built = self._vmops._require(instance)
            if self._call('VM.get_power_state', built.guest) != \
                    xc.POWER_STATE_RUNNING:
                raise exception.InstanceSuspendFailure(reason=_(
                    'only a running guest can be suspended'))
            pv_guests.check_suspend(self._ctx, instance, built.guest_uuid)
            memory = int(self._call('VM.get_memory_static_max',
                                    built.guest))
            sr = self._vmops._hostops.select_sr()
            vdi = self._call('VDI.create', vmbuild.vdi_record(
                instance, sr, memory + 64 * MiB, SUSPEND_DISK))
            key = new_key().hex()
            try:
                vdi_uuid = self._call('VDI.get_uuid', vdi)
                self._ctx.call_plugin(
                    'save_image', guest_vm_uuid=built.guest_uuid,
                    vdi_uuid=vdi_uuid, key=key,
                    device_state_timeout=self._conf.device_state_timeout)
            except Exception:
                with excutils.save_and_reraise_exception():
                    self._call('VDI.destroy', vdi)
            try:
                # the key first: the Halted event then carries it, so
                # nobody takes the halt for a shutdown
                self._call('VM.add_to_other_config', built.guest,
                           dc.OC_SUSPEND_IMAGE, vdi_uuid)
                self._call_async('VM.hard_shutdown', built.guest)
            except Exception:
                with excutils.save_and_reraise_exception():
                    LOG.error('suspend failed after the save; the guest '
                              'runs on', instance=instance)
                    self._forget_image(built.guest, vdi)
                    if self._call('VM.get_power_state', built.guest) == \
                            xc.POWER_STATE_RUNNING:
                        self._ctx.call_plugin(
                            'undo_save', guest_vm_uuid=built.guest_uuid)
            self._vmops._stop(instance, None, built.stubdom,
                              built.guest_uuid)
            instance.system_metadata[SMETA_IMAGE_KEY] = key
        LOG.info('suspended into VDI %s', vdi_uuid, instance=instance)

    def _forget_image(self, guest: str, vdi: Optional[str]) -> None:
        oc = self._call('VM.get_other_config', guest)
        if dc.OC_SUSPEND_IMAGE in oc:
            self._call('VM.remove_from_other_config', guest,
                       dc.OC_SUSPEND_IMAGE)
        if vdi:
            self._call('VDI.destroy', vdi)

    def resume(self, context, instance, network_info,
               block_device_info=None, share_info=None):
        """Start stub domain and (paused) guest through XAPI, feed the
        device state back and restore memory and CPU from the suspend
        image (checked completely first), then unpause."""
        with self._vmops._operation(instance):
            built = self._vmops._require(instance)
            state = self._call('VM.get_power_state', built.guest)
            vdi = self._vmops.suspend_image(built.guest)
            if state != xc.POWER_STATE_HALTED or not vdi:
                raise exception.InstanceResumeFailure(reason=_(
                    'the guest VM is %s and has no suspend image of this '
                    'driver') % state)
            key = (instance.system_metadata or {}).get(SMETA_IMAGE_KEY)
            if not key:
                raise exception.InstanceResumeFailure(reason=_(
                    'no key for the suspend image of this instance: it was '
                    'not suspended by this driver'))
            try:
                vdi_uuid = self._call('VDI.get_uuid', vdi)
                self._ctx.call_plugin('verify_image', vdi_uuid=vdi_uuid,
                                      key=key,
                                      expected_vm_uuid=built.guest_uuid)
            except (dexc.AgentCallFailed, xapi_errors.XAPIError) as exc:
                # nothing changed: still halted with its image, untouched
                # (the rollback keeps Nova's vm_state SUSPENDED, not ERROR)
                raise exception.InstanceFaultRollback(
                    exception.InstanceResumeFailure(reason=_(
                        'the suspend image was refused: %s') % exc))
            cfg = guest_config.resolve(instance.flavor, None)
            vifs = [(vif, None) for vif in network_info or []]
            try:
                self._start_paused(instance, built, cfg, vifs)
                self._ctx.call_plugin(
                    'restore_image', guest_vm_uuid=built.guest_uuid,
                    vdi_uuid=vdi_uuid, key=key,
                    expected_vm_uuid=built.guest_uuid,
                    device_state_timeout=self._conf.device_state_timeout)
                self._call('VM.unpause', built.guest)
            except Exception:
                with excutils.save_and_reraise_exception():
                    LOG.error('resume failed; the guest is halted and its '
                              'suspend image kept', instance=instance)
                    self._vmops._stop(instance, built.guest, built.stubdom,
                                      built.guest_uuid)
            self._forget_image(built.guest, vdi)
            instance.system_metadata.pop(SMETA_IMAGE_KEY, None)
        LOG.info('resumed', instance=instance)

    def _start_paused(self, instance, built, cfg, vifs) -> None:
        host = self._ctx.host_ref
        self._call_async('VM.start_on', built.stubdom, host, False, False)
        stub_domid = int(self._call('VM.get_domid', built.stubdom))
        self._ctx.call_plugin('link_stubdom', stubdom_domid=stub_domid,
                              guest_vm_uuid=built.guest_uuid,
                              config=self._vmops._dm_config(instance, cfg,
                                                            vifs))
        self._call_async('VM.start_on', built.guest, host, True, False)
        guest_domid = int(self._call('VM.get_domid', built.guest))
        self._vmops._wait_dm(instance, stub_domid, guest_domid)

    # -- cold migration / resize --
    def migrate_disk_and_power_off(self, context, instance, dest, flavor,
                                   network_info, block_device_info=None,
                                   timeout=0, retry_interval=0):
        """Source: halt the guest and hand its disks to the destination.

        Both hosts are in one XAPI pool: the disks stay on the pool's SR
        and the destination attaches the same VDIs.  Until confirm or
        revert, the source's VMs are set aside (role ``resize-source-*``)
        and the disks renamed (``<name>-root.resize-source``), so that
        neither host's lookups nor Nova's destroy on the destination (at
        revert) can remove what the other side still needs.  *dest* is the
        destination's IP: nothing here needs it.
        """
        refusal = resize_refusal(instance.flavor, flavor)
        if refusal:
            raise exception.InstanceFaultRollback(
                exception.ResizeError(reason=refusal))
        with self._vmops._operation(instance):
            built = self._vmops._require(instance)
            self._vmops._stop(instance, built.guest, built.stubdom,
                              built.guest_uuid,
                              clean_timeout=timeout or None)
            disks = {}
            for vdi in built.vdis:
                oc = self._call('VDI.get_other_config', vdi)
                disks[self._call('VDI.get_uuid', vdi)] = oc.get(dc.OC_DISK,
                                                                'root')
            self._set_aside(built, aside=True)
        return json.dumps({'vdis': disks})

    def _set_aside(self, built, aside: bool) -> None:
        """Rename the source's VMs/disks out of the instance's way (or
        back), so the destination's lookups and destroy never touch them."""
        for ref, role in ((built.guest, dc.ROLE_GUEST),
                          (built.stubdom, dc.ROLE_STUBDOM)):
            if not ref:
                continue
            self._call('VM.remove_from_other_config', ref, dc.OC_ROLE)
            self._call('VM.add_to_other_config', ref, dc.OC_ROLE,
                       RESIZE_SOURCE + role if aside else role)
        for vdi in built.vdis:
            name = self._call('VDI.get_name_label', vdi)
            if aside and not name.endswith(RESIZE_SUFFIX):
                self._call('VDI.set_name_label', vdi, name + RESIZE_SUFFIX)
            elif not aside and name.endswith(RESIZE_SUFFIX):
                self._call('VDI.set_name_label', vdi,
                           name[:-len(RESIZE_SUFFIX)])

    def _aside(self, instance):
        built = vmops_mod.Built()
        vms = self._find(instance, (RESIZE_SOURCE + dc.ROLE_GUEST,
                                    RESIZE_SOURCE + dc.ROLE_STUBDOM))
        if RESIZE_SOURCE + dc.ROLE_GUEST in vms:
            built.guest, rec = vms[RESIZE_SOURCE + dc.ROLE_GUEST]
            built.guest_uuid = rec['uuid']
        if RESIZE_SOURCE + dc.ROLE_STUBDOM in vms:
            built.stubdom = vms[RESIZE_SOURCE + dc.ROLE_STUBDOM][0]
        for disk in dc.DISK_USERDEVICE:
            for ref in self._call('VDI.get_by_name_label', '%s-%s%s' % (
                    instance.name, disk, RESIZE_SUFFIX)):
                oc = self._call('VDI.get_other_config', ref)
                if oc.get(dc.OC_NOVA_UUID) == instance.uuid:
                    built.vdis.append(ref)
        return built

    def finish_migration(self, context, migration, instance, disk_info,
                         network_info, image_meta, resize_instance,
                         allocations, block_device_info=None,
                         power_on=True):
        """Destination: VMs for the (new) flavor on the copied disks."""
        cfg = guest_config.resolve(instance.flavor, image_meta)
        copies = json.loads(disk_info or '{}').get('vdis', {})
        built = vmops_mod.Built()
        host = self._ctx.host_ref
        with self._vmops._operation(instance):
            try:
                disks = {}
                for uuid, disk in copies.items():
                    ref = self._call('VDI.get_by_uuid', uuid)
                    built.vdis.append(ref)
                    disks[disk] = ref
                missing = [d for d, _dev in cfg.disks() if d not in disks]
                if missing:
                    raise dexc.XenStubdomDriverError(reason=_(
                        'disks of the flavor did not come with the '
                        'migration: %s') % ', '.join(missing))
                if resize_instance:
                    # grown disks (resize_refusal let nothing else through)
                    for disk, want in (('root', max(cfg.root_gb, 1) * dc.GiB),
                                       ('ephemeral',
                                        cfg.ephemeral_gb * dc.GiB)):
                        if disk in disks and want > int(self._call(
                                'VDI.get_virtual_size', disks[disk])):
                            self._call('VDI.resize', disks[disk], want)
                guest = self._call('VM.create', vmbuild.guest_record(
                    instance, cfg, host))
                built.guest = guest
                built.guest_uuid = self._call('VM.get_uuid', guest)
                stub = self._call('VM.create', vmbuild.stubdom_record(
                    instance, cfg, host, built.guest_uuid,
                    self._conf.stubdom_kernel, self._conf.stubdom_ramdisk))
                built.stubdom = stub
                stub_uuid = self._call('VM.get_uuid', stub)
                self._call('VM.add_to_other_config', guest, dc.OC_STUBDOM,
                           stub_uuid)
                for disk, userdevice in cfg.disks():
                    self._vmops.attach_disk(built, disks[disk], disk,
                                            userdevice)
                vifs = []
                for index, vif in enumerate(network_info or []):
                    net_ref = self._vmops._network_ref(vif)
                    vifs.append((vif, net_ref))
                    self._vmops.attach_nic(built, vif, net_ref, index)
                if power_on:
                    self._vmops._start(instance, built, cfg, vifs)
            except Exception:
                with excutils.save_and_reraise_exception():
                    LOG.error('finish_migration failed; removing the VMs '
                              'built here (the disks stay for a revert)',
                              instance=instance)
                    built.vdis = []
                    self._vmops._teardown(instance, built, raise_first=False)
        LOG.info('cold migration finished here', instance=instance)

    def confirm_migration(self, context, migration, instance, network_info):
        """Source: the move is confirmed; remove the set-aside VMs.  The
        disks are the destination's now: they get their names back."""
        built = self._aside(instance)
        if built.empty():
            return
        with self._vmops._operation(instance):
            vdis, built.vdis = built.vdis, []
            self._vmops._teardown(instance, built, raise_first=True)
            self._set_aside(vmops_mod.Built(vdis=vdis), aside=False)
        LOG.info('resize confirmed: source VMs removed', instance=instance)

    def finish_revert_migration(self, context, instance, network_info,
                                migration, block_device_info=None,
                                power_on=True):
        """Source: bring the set-aside VMs and disks back, intact."""
        built = self._aside(instance)
        if not built.guest:
            raise exception.InstanceNotFound(instance_id=instance.uuid)
        with self._vmops._operation(instance):
            self._set_aside(built, aside=False)
            if power_on:
                self._vmops._restart(instance, built, None, network_info)
        LOG.info('resize reverted', instance=instance)


def resize_refusal(old, new) -> Optional[str]:
    """Why a resize from flavor *old* to *new* cannot keep the guest's
    disks (None: it can).  Checked on the source before anything changes:
    disks may grow, never shrink, appear or vanish."""
    if new.root_gb < old.root_gb:
        return _('shrinking the root disk from %(old)d GiB to %(new)d GiB '
                 'is not supported (data would be lost); choose a flavor '
                 'with a root disk of at least %(old)d GiB') % {
                     'old': old.root_gb, 'new': new.root_gb}
    old_eph, new_eph = int(old.ephemeral_gb or 0), int(new.ephemeral_gb or 0)
    if bool(old_eph) != bool(new_eph) or new_eph < old_eph:
        return _('the ephemeral disk can grow on resize, not shrink, appear '
                 'or vanish (%(old)d GiB to %(new)d GiB asked)') % {
                     'old': old_eph, 'new': new_eph}
    old_swap, new_swap = int(old.swap or 0), int(new.swap or 0)
    if old_swap != new_swap:
        return _('changing the swap disk on resize (%(old)d MiB to '
                 '%(new)d MiB) is not supported; choose a flavor with '
                 '%(old)d MiB of swap') % {'old': old_swap, 'new': new_swap}
    return None


def _cpu_vendor(compute_info) -> Optional[str]:
    if not compute_info:
        return None
    info = compute_info.get('cpu_info') if isinstance(compute_info, dict) \
        else getattr(compute_info, 'cpu_info', None)
    if isinstance(info, str):
        try:
            info = json.loads(info)
        except ValueError:
            return None
    return (info or {}).get('vendor') if isinstance(info, dict) else None
