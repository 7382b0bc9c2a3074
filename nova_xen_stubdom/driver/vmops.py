"""Guest lifecycle: an HVM guest VM plus its device-model stub domain VM.

Spawn builds, in order: the root VDI (image imported over HTTP), the guest
VM, the stub domain VM, the guest's VBDs/VIFs and their mirrors on the stub
domain; then starts the stub domain, has the dom0 agent link it to the
guest, starts the guest and waits until QEMU in the stub domain reports
``running``.  Every object is recorded as it is created; any failure tears
down exactly what exists, so a failed spawn leaves nothing behind.
"""
import contextlib
import dataclasses
import threading
import time
from typing import Callable, Dict, List, Optional

from oslo_log import log as logging
from oslo_utils import excutils

from nova.compute import power_state
from nova import exception
from nova.i18n import _
from nova.virt import hardware

from nova_xen_stubdom.driver import configdrive
from nova_xen_stubdom.driver import constants as dc
from nova_xen_stubdom.driver import exceptions as dexc
from nova_xen_stubdom.driver import guest_config
from nova_xen_stubdom.driver import imageops
from nova_xen_stubdom.driver import vmbuild
from nova_xen_stubdom.driver import volumeutils
from nova_xen_stubdom.xapi import constants as xc
from nova_xen_stubdom.xapi import errors as xapi_errors
from nova_xen_stubdom.xapi import power as xpower

LOG = logging.getLogger(__name__)

DM_POLL_INTERVAL = 0.1


class SpawnStepFailed(dexc.XenStubdomDriverError):
    msg_fmt = _('spawn of instance %(uuid)s failed at step "%(step)s": '
                '%(reason)s (everything created was removed)')


def _direct(step: str, fn: Callable, *args, **kwargs):
    """A step outside spawn's bookkeeping: just run it."""
    return fn(*args, **kwargs)


@dataclasses.dataclass
class Built:
    """XAPI objects of one instance (as far as they exist)."""
    guest: Optional[str] = None
    stubdom: Optional[str] = None
    guest_uuid: Optional[str] = None
    vdis: List[str] = dataclasses.field(default_factory=list)
    vbds: List[str] = dataclasses.field(default_factory=list)
    vifs: List[str] = dataclasses.field(default_factory=list)
    #: volume SRs this operation connected (forgotten on rollback when
    #: unused)
    srs: List[str] = dataclasses.field(default_factory=list)

    def empty(self) -> bool:
        return not (self.guest or self.stubdom or self.vdis)


class VMOps:
    def __init__(self, ctx, hostops, pciops=None) -> None:
        self._ctx = ctx
        self._hostops = hostops
        self._pciops = pciops
        #: SR/PBD/VDI of Cinder volumes (volumeops attaches them)
        self.volumes = volumeutils.VolumeStorage(ctx)
        #: instance uuids with a driver operation in flight: their power
        #: changes are ours, not lifecycle events from outside Nova
        self._busy: Dict[str, int] = {}
        #: operation name -> XAPI calls of its last run (for figures)
        self.call_stats: Dict[str, List[str]] = {}
        self._busy_lock = threading.Lock()
        #: instances being rebuilt after their guest's own reboot: to Nova
        #: they are running throughout, as a libvirt guest rebooting is
        self._guest_rebooting: set = set()

    # -- helpers ----------------------------------------------------------
    @property
    def _conf(self):
        return self._ctx.conf.xen_stubdom

    def _call(self, method: str, *args):
        return self._ctx.call(method, *args)

    @contextlib.contextmanager
    def _operation(self, instance, name: str = 'other'):
        """Lock the instance and mark its power changes as Nova's own.

        The XAPI calls made inside are kept in :attr:`call_stats` [*name*]
        (the last operation of that name).
        """
        with self._ctx.lock(instance.uuid):
            with self._busy_lock:
                self._busy[instance.uuid] = self._busy.get(
                    instance.uuid, 0) + 1
            try:
                with self._ctx.tally() as calls:
                    yield
            finally:
                self.call_stats[name] = calls
                with self._busy_lock:
                    n = self._busy.pop(instance.uuid) - 1
                    if n:
                        self._busy[instance.uuid] = n

    def is_busy(self, instance_uuid: str) -> bool:
        with self._busy_lock:
            return instance_uuid in self._busy

    # -- lookup -----------------------------------------------------------
    def _cached_vms(self, instance_uuid: str) -> Dict[str, tuple]:
        out = {}
        for ref, rec in self._ctx.cache.find(
                'VM', other_config={dc.OC_NOVA_UUID: instance_uuid}):
            role = rec['other_config'].get(dc.OC_ROLE)
            if role in (dc.ROLE_GUEST, dc.ROLE_STUBDOM):
                out[role] = (ref, rec)
        return out

    def guest_record(self, instance) -> Optional[tuple]:
        """``(ref, record)`` of the guest VM from the cache, or None."""
        return self._cached_vms(instance.uuid).get(dc.ROLE_GUEST)

    def stubdom_record(self, instance) -> Optional[tuple]:
        return self._cached_vms(instance.uuid).get(dc.ROLE_STUBDOM)

    def _find_fresh(self, instance) -> Built:
        """Every object of *instance*, asked from XAPI (not the cache).

        Used where a stale answer would leak (destroy of a half-built
        guest whose creation events have not reached the cache yet).
        """
        built = Built()
        for name, role in ((instance.name, dc.ROLE_GUEST),
                           (instance.name + dc.STUBDOM_SUFFIX,
                            dc.ROLE_STUBDOM)):
            for ref in self._call('VM.get_by_name_label', name):
                oc = self._call('VM.get_other_config', ref)
                if oc.get(dc.OC_NOVA_UUID) != instance.uuid:
                    continue
                if oc.get(dc.OC_ROLE) != role:
                    continue
                if role == dc.ROLE_GUEST:
                    built.guest = ref
                else:
                    built.stubdom = ref
        for disk in list(dc.DISK_USERDEVICE) + [configdrive.DISK]:
            for ref in self._call('VDI.get_by_name_label',
                                  '%s-%s' % (instance.name, disk)):
                oc = self._call('VDI.get_other_config', ref)
                if oc.get(dc.OC_NOVA_UUID) == instance.uuid:
                    built.vdis.append(ref)
        return built

    # -- spawn ------------------------------------------------------------
    def _network_ref(self, vif) -> str:
        bridge = (vif.get('network') or {}).get('bridge')
        nets = self._ctx.cache.get_all('network')
        wanted = self._conf.network_name_label
        for key, value in (('bridge', bridge), ('name_label', bridge),
                           ('name_label', wanted)):
            if not value:
                continue
            for ref, net in sorted(nets.items()):
                if net.get(key) == value:
                    return ref
        raise exception.NetworkNotFoundForBridge(
            bridge=bridge or wanted or '?')

    def spawn(self, context, instance, image_meta, network_info,
              power_on: bool = True, block_device_info=None,
              injected_files=None, admin_password=None) -> None:
        # Everything checkable is checked before anything is created.
        cfg = guest_config.resolve(instance.flavor, image_meta)
        configdrive.check(instance)
        volumes = volumeutils.plan(block_device_info, [
            n for disk, n in cfg.disks() if disk != 'root'])
        boot_volume = volumes[0] if volumes and \
            volumes[0].userdevice == 0 else None
        sr_ref = self._hostops.select_sr()
        if sr_ref is None:
            raise dexc.XenStubdomDriverError(
                reason=_('no SR matches [xen_stubdom] sr_matching_filter '
                         '%s') % self._conf.sr_matching_filter)
        vifs = [(vif, self._network_ref(vif)) for vif in network_info or []]
        built = Built()
        step = ['start']

        def do(name: str, fn: Callable, *args, **kwargs):
            step[0] = name
            return fn(*args, **kwargs)

        with self._operation(instance, 'spawn'):
            try:
                vdis = {}
                for vol in volumes:
                    # boot from volume: the root disk is the volume's VDI
                    sr, vdis[vol.userdevice] = self.volumes.connect(
                        vol.target, 'volume %s of %s' % (
                            vol.target.volume_id, instance.name), do)
                    built.srs.append(sr)
                if boot_volume is None:
                    size = max(cfg.root_gb, 1) * dc.GiB
                    vdi = do('VDI.create (root disk)', self._call,
                             'VDI.create', vmbuild.vdi_record(
                                 instance, sr_ref, size, 'root'))
                    built.vdis.append(vdi)
                    do('image import (HTTP PUT /import_raw_vdi)',
                       imageops.import_image, context, self._ctx,
                       instance, image_meta, vdi, size)
                else:
                    vdi = vdis[0]
                guest = do('VM.create (HVM guest)', self._call, 'VM.create',
                           vmbuild.guest_record(instance, cfg,
                                                self._ctx.host_ref))
                built.guest = guest
                built.guest_uuid = do('VM.get_uuid', self._call,
                                      'VM.get_uuid', guest)
                stub = do('VM.create (stub domain)', self._call, 'VM.create',
                          vmbuild.stubdom_record(
                              instance, cfg, self._ctx.host_ref,
                              built.guest_uuid, self._conf.stubdom_kernel,
                              self._conf.stubdom_ramdisk))
                built.stubdom = stub
                stub_uuid = do('VM.get_uuid', self._call, 'VM.get_uuid',
                               stub)
                do('VM.add_to_other_config (guest)', self._call,
                   'VM.add_to_other_config', guest, dc.OC_STUBDOM, stub_uuid)
                disks = {'root': vdi}
                if cfg.ephemeral_gb:
                    disks['ephemeral'] = do(
                        'VDI.create (ephemeral disk)', self._call,
                        'VDI.create', vmbuild.vdi_record(
                            instance, sr_ref, cfg.ephemeral_gb * dc.GiB,
                            'ephemeral'))
                    built.vdis.append(disks['ephemeral'])
                if cfg.swap_mb:
                    disks['swap'] = do(
                        'VDI.create (swap disk)', self._call, 'VDI.create',
                        vmbuild.vdi_record(instance, sr_ref,
                                           cfg.swap_mb * dc.MiB, 'swap'))
                    built.vdis.append(disks['swap'])
                    do('swap signature (HTTP PUT /import_raw_vdi)',
                       imageops.format_swap, self._ctx, instance,
                       disks['swap'], cfg.swap_mb * dc.MiB)
                for disk, userdevice in cfg.disks():
                    self.attach_disk(
                        built, disks[disk], disk, userdevice, do,
                        volume_id=boot_volume.target.volume_id
                        if boot_volume and userdevice == 0 else None)
                for vol in volumes:
                    if vol is not boot_volume:
                        self.attach_disk(built, vdis[vol.userdevice],
                                         'volume', vol.userdevice, do,
                                         volume_id=vol.target.volume_id)
                for index, (vif, net_ref) in enumerate(vifs):
                    self.attach_nic(built, vif, net_ref, index, do)
                if configdrive.required_by(instance):
                    configdrive.attach(self._ctx, self, built, instance,
                                       sr_ref, injected_files,
                                       admin_password, network_info, do)
                if power_on:
                    self._start(instance, built, cfg, vifs, do)
            except Exception as exc:
                with excutils.save_and_reraise_exception() as ctxt:
                    LOG.error('spawn failed at step "%(step)s": %(exc)s; '
                              'removing what was built', {
                                  'step': step[0], 'exc': exc},
                              instance=instance)
                    self._teardown(instance, built, raise_first=False)
                    if not isinstance(exc, exception.NovaException) or \
                            isinstance(exc, dexc.XenStubdomDriverError):
                        ctxt.reraise = False
                        raise SpawnStepFailed(
                            uuid=instance.uuid, step=step[0],
                            reason=str(dexc.translate(exc))) from exc
        LOG.info('spawned: guest %(guest)s with its stub domain %(stub)s',
                 {'guest': built.guest, 'stub': built.stubdom},
                 instance=instance)

    def attach_disk(self, built: Built, vdi: str, disk: str,
                    userdevice: int, do: Optional[Callable] = None,
                    volume_id: Optional[str] = None) -> None:
        """*vdi* on the guest at *userdevice* and, mirrored, on its stub
        domain (whose QEMU emulates the disk from there).  A Cinder
        volume's VBDs carry its id; beside the boot disk they are
        ``unpluggable`` (detach from a running guest)."""
        do = do or _direct
        tag = {dc.OC_VOLUME_ID: volume_id} if volume_id else {}
        rec = vmbuild.vbd_record(built.guest, vdi, userdevice,
                                 userdevice == 0, dict(tag))
        rec['unpluggable'] = bool(volume_id) and userdevice != 0
        vbd = do('VBD.create (guest %s disk)' % disk, self._call,
                 'VBD.create', rec)
        built.vbds.append(vbd)
        vbd_uuid = do('VBD.get_uuid', self._call, 'VBD.get_uuid', vbd)
        rec = vmbuild.vbd_record(built.stubdom, vdi, userdevice, False,
                                 dict(tag, **{dc.OC_MIRROR_OF: vbd_uuid}))
        rec['unpluggable'] = bool(volume_id) and userdevice != 0
        built.vbds.append(do(
            'VBD.create (stub domain mirror of the %s disk)' % disk,
            self._call, 'VBD.create', rec))

    def attach_nic(self, built: Built, vif, net_ref: str, index: int,
                   do: Optional[Callable] = None) -> None:
        """Nova's *vif* as the guest's NIC *index* on *net_ref*, mirrored
        on its stub domain (QEMU's emulated NIC is backed there)."""
        do = do or _direct
        mtu = (vif.get('network') or {}).get('meta', {}).get('mtu') or 1500
        ref = do('VIF.create (guest NIC %d)' % index, self._call,
                 'VIF.create', vmbuild.vif_record(
                     built.guest, net_ref, index, vif['address'], mtu,
                     {dc.OC_VIF_ID: vif['id']}))
        built.vifs.append(ref)
        vif_uuid = do('VIF.get_uuid', self._call, 'VIF.get_uuid', ref)
        built.vifs.append(do(
            'VIF.create (stub domain mirror of NIC %d)' % index,
            self._call, 'VIF.create', vmbuild.vif_record(
                built.stubdom, net_ref, index, vif['address'], mtu,
                {dc.OC_MIRROR_OF: vif_uuid})))

    def _dm_config(self, instance, cfg, vifs,
                   guest: Optional[str] = None) -> dict:
        config = {
            'name': instance.name,
            'memory_mb': cfg.memory_mb,
            'vcpus': cfg.vcpus,
            'vga': cfg.video,
            'firmware': cfg.firmware,
            'boot': 'cd',
            'disks': [{'bus': cfg.disk_bus, 'index': userdevice}
                      for _disk, userdevice in cfg.disks()],
            'nics': [{'mac': vif['address'], 'model': cfg.vif_model,
                      'index': i} for i, (vif, _n) in enumerate(vifs)],
        }
        if guest:
            # attached volumes beside the flavor's disks
            config['disks'] += self.volumes.dm_disks(
                guest, cfg.disk_bus, [n for _d, n in cfg.disks()])
            config['nics'] = self._dm_nics(guest, cfg.vif_model)
            config['cdroms'] = self._dm_cdroms(guest)
        if self._pciops is not None and hasattr(self._pciops,
                                                'instance_addresses'):
            config['pci'] = self._pciops.instance_addresses(instance)
        return config

    def _dm_nics(self, guest: str, model: str) -> List[dict]:
        """QEMU's NICs: the guest's VIFs as XAPI has them.  Their device
        numbers are the stub domain's netfront numbers (the mirrors share
        them) and need not follow Nova's network_info order once
        interfaces were attached and detached (vifops)."""
        nics = []
        for ref in self._call('VM.get_VIFs', guest):
            rec = self._call('VIF.get_record', ref)
            nics.append({'mac': rec['MAC'], 'model': model,
                         'index': int(rec['device'])})
        return sorted(nics, key=lambda nic: nic['index'])

    def _dm_cdroms(self, guest: str) -> List[dict]:
        """QEMU's CD-ROM drives: the guest's CD VBDs that hold a disc (the
        config drive), at their userdevice (the stub domain's mirror has
        the same number)."""
        out = []
        for ref in self._call('VM.get_VBDs', guest):
            rec = self._call('VBD.get_record', ref)
            if rec['type'] == 'CD' and not rec['empty']:
                out.append({'index': int(rec['userdevice'])})
        return sorted(out, key=lambda cd: cd['index'])

    def _start(self, instance, built: Built, cfg, vifs, do=None) -> None:
        """Stub domain first, link, then the guest; wait for the DM."""
        do = do or _direct
        host = self._ctx.host_ref
        do('VM.start_on (stub domain)', self._ctx.call_async,
           'VM.start_on', built.stubdom, host, False, False)
        stub_domid = int(do('VM.get_domid (stub domain)', self._call,
                            'VM.get_domid', built.stubdom))
        do('agent link_stubdom', self._ctx.call_plugin, 'link_stubdom',
           stubdom_domid=stub_domid, guest_vm_uuid=built.guest_uuid,
           config=self._dm_config(instance, cfg, vifs, built.guest))
        if self._pciops is not None and hasattr(self._pciops, 'assign'):
            do('PCI assign', self._pciops.assign, instance, built.guest)
        do('VM.start_on (HVM guest)', self._ctx.call_async, 'VM.start_on',
           built.guest, host, False, False)
        guest_domid = int(do('VM.get_domid (HVM guest)', self._call,
                             'VM.get_domid', built.guest))
        do('wait for the device model', self._wait_dm, instance,
           stub_domid, guest_domid)

    def _wait_dm(self, instance, stub_domid: int, guest_domid: int) -> None:
        deadline = time.monotonic() + self._conf.device_model_start_timeout
        state = None
        while True:
            out = self._ctx.call_plugin(
                'dm_state', stubdom_domid=stub_domid,
                guest_domid=guest_domid)
            state = out.get('state')
            if state == dc.DM_RUNNING:
                LOG.debug('device model running in stub domain %(s)d for '
                          'domain %(g)d', {'s': stub_domid, 'g': guest_domid},
                          instance=instance)
                return
            if state in ('failed', 'error') or time.monotonic() > deadline:
                raise dexc.StubdomStartFailed(
                    uuid=instance.uuid,
                    reason=_('device model state %(state)r (%(error)s)')
                    % {'state': state,
                       'error': out.get('error') or 'timeout %ss' %
                       self._conf.device_model_start_timeout})
            time.sleep(DM_POLL_INTERVAL)

    # -- teardown ---------------------------------------------------------
    def _power_state(self, vm_ref: str) -> Optional[str]:
        try:
            return self._call('VM.get_power_state', vm_ref)
        except xapi_errors.HandleInvalid:
            return None

    def _shutdown(self, vm_ref: str, clean_timeout: Optional[float] = None
                  ) -> None:
        """Halt *vm_ref*: cleanly within *clean_timeout*, else hard."""
        state = self._power_state(vm_ref)
        if state in (None, xc.POWER_STATE_HALTED):
            return
        if clean_timeout and state == xc.POWER_STATE_RUNNING and \
                not self._can_clean_shutdown(vm_ref):
            LOG.info('%s cannot be shut down cleanly (no PV drivers, no '
                     'feature-shutdown/-poweroff): halting it', vm_ref)
        elif clean_timeout and state == xc.POWER_STATE_RUNNING:
            try:
                self._ctx.call_async('VM.clean_shutdown', vm_ref,
                                     timeout=clean_timeout)
                return
            except xapi_errors.XAPIException as exc:
                LOG.warning('clean shutdown of %(vm)s failed (%(exc)s); '
                            'forcing it', {'vm': vm_ref, 'exc': exc})
                if self._power_state(vm_ref) in (None,
                                                 xc.POWER_STATE_HALTED):
                    return
        if state == xc.POWER_STATE_SUSPENDED:
            return
        self._ctx.call_async('VM.hard_shutdown', vm_ref)

    def _can_clean_shutdown(self, vm_ref: str) -> bool:
        """XAPI asks a guest to shut down only if it has PV drivers or
        advertises the feature (xapi_vm_lifecycle.ml check_op_for_feature);
        otherwise VM.clean_shutdown answers VM_LACKS_FEATURE.  Its
        allowed_operations says which."""
        try:
            ops = self._call('VM.get_allowed_operations', vm_ref)
        except xapi_errors.XAPIError:
            return True     # let the call itself decide
        return 'clean_shutdown' in ops

    def _stop(self, instance, guest: Optional[str], stub: Optional[str],
              guest_uuid: Optional[str],
              clean_timeout: Optional[float] = None) -> None:
        """Guest down, then its stub domain: a stubdom never outlives it."""
        if guest:
            self._shutdown(guest, clean_timeout)
            if self._pciops is not None and hasattr(self._pciops, 'release'):
                self._pciops.release(instance, guest)
        if guest_uuid:
            self._ctx.call_plugin('unlink_stubdom', guest_vm_uuid=guest_uuid)
        if stub:
            self._shutdown(stub)

    def _teardown(self, instance, built: Built, raise_first: bool) -> None:
        """Remove *built*; keep going past failures (report the first)."""
        failures: List[BaseException] = []

        def attempt(what: str, fn: Callable, *args):
            try:
                return fn(*args)
            except xapi_errors.HandleInvalid:
                return None     # already gone: that is the goal
            except Exception as exc:
                LOG.warning('teardown: %(what)s failed: %(exc)s',
                            {'what': what, 'exc': exc}, instance=instance)
                failures.append(exc)
                return None

        if built.guest and not built.guest_uuid:
            built.guest_uuid = attempt('VM.get_uuid', self._call,
                                       'VM.get_uuid', built.guest)
        attempt('stop', self._stop, instance, built.guest, built.stubdom,
                built.guest_uuid)
        volume_srs = set(built.srs)
        for vm in (built.guest, built.stubdom):
            if not vm:
                continue
            vbds = attempt('VM.get_VBDs', self._call, 'VM.get_VBDs', vm)
            volume_srs |= attempt('volume SRs', self.volumes.volume_srs,
                                  vbds or []) or set()
            vifs = attempt('VM.get_VIFs', self._call, 'VM.get_VIFs', vm)
            for vbd in vbds or []:
                attempt('VBD.destroy', self._call, 'VBD.destroy', vbd)
            for vif in vifs or []:
                attempt('VIF.destroy', self._call, 'VIF.destroy', vif)
            attempt('VM.destroy', self._call, 'VM.destroy', vm)
        # objects created but not reachable from a VM (failed mid-spawn)
        for vbd in built.vbds:
            attempt('VBD.destroy', self._destroy_if_exists, 'VBD', vbd)
        for vif in built.vifs:
            attempt('VIF.destroy', self._destroy_if_exists, 'VIF', vif)
        for vdi in built.vdis:
            attempt('VDI.destroy', self._call, 'VDI.destroy', vdi)
        # volumes stay on their array; XAPI forgets their SRs once no VBD
        # uses them
        for sr in sorted(volume_srs):
            attempt('volume SR.forget', self.volumes.purge, sr)
        if failures and raise_first:
            raise failures[0]

    def _destroy_if_exists(self, cls: str, ref: str) -> None:
        try:
            self._call('%s.get_uuid' % cls, ref)
        except xapi_errors.HandleInvalid:
            return
        self._call('%s.destroy' % cls, ref)

    def suspend_image(self, guest_ref: str) -> Optional[str]:
        """The VDI holding the suspended guest's image, or None."""
        try:
            uuid = self._call('VM.get_other_config', guest_ref).get(
                dc.OC_SUSPEND_IMAGE)
            return self._call('VDI.get_by_uuid', uuid) if uuid else None
        except xapi_errors.HandleInvalid:
            return None
        except xapi_errors.XAPIError as exc:
            if exc.code == 'UUID_INVALID':
                return None
            raise

    def destroy(self, instance) -> None:
        """Remove the guest, its stub domain and disks (idempotent)."""
        with self._operation(instance, 'destroy'):
            built = self._find_fresh(instance)
            if built.guest:
                image = self.suspend_image(built.guest)
                if image:
                    built.vdis.append(image)
            if built.empty():
                LOG.warning('destroy: no XAPI objects for this instance',
                            instance=instance)
                return
            self._teardown(instance, built, raise_first=True)
        LOG.info('destroyed', instance=instance)

    # -- power ------------------------------------------------------------
    def _require(self, instance) -> Built:
        built = self._find_fresh(instance)
        if not built.guest:
            raise exception.InstanceNotFound(instance_id=instance.uuid)
        if not built.stubdom:
            raise dexc.XenStubdomDriverError(
                reason=_('instance %s has no stub domain VM') % instance.uuid)
        built.guest_uuid = self._call('VM.get_uuid', built.guest)
        return built

    def _restart(self, instance, built: Built, image_meta=None,
                 network_info=None) -> None:
        cfg = guest_config.resolve(instance.flavor, image_meta)
        vifs = [(vif, None) for vif in network_info or []]
        image = self.suspend_image(built.guest)
        if image:
            # a fresh boot (hard reboot of a suspended instance) makes the
            # saved state meaningless, as with libvirt's managed save
            LOG.info('discarding the suspend image', instance=instance)
            self._call('VM.remove_from_other_config', built.guest,
                       dc.OC_SUSPEND_IMAGE)
            self._call('VDI.destroy', image)
        try:
            self._start(instance, built, cfg, vifs)
        except Exception:
            with excutils.save_and_reraise_exception():
                # never leave a stub domain running without its guest
                try:
                    self._stop(instance, built.guest, built.stubdom,
                               built.guest_uuid)
                except Exception as exc:
                    LOG.warning('could not stop after a failed start: %s',
                                exc, instance=instance)

    def power_off(self, instance, timeout: int = 0) -> None:
        with self._operation(instance, 'power_off'):
            built = self._require(instance)
            self._stop(instance, built.guest, built.stubdom,
                       built.guest_uuid, clean_timeout=timeout or None)

    def power_on(self, instance, network_info, image_meta=None) -> None:
        with self._operation(instance, 'power_on'):
            built = self._require(instance)
            state = self._power_state(built.guest)
            if state == xc.POWER_STATE_RUNNING:
                return
            if state == xc.POWER_STATE_PAUSED:
                self._call('VM.unpause', built.guest)
                return
            # a stub domain may be left from a guest halted outside Nova
            self._stop(instance, None, built.stubdom, built.guest_uuid)
            self._restart(instance, built, image_meta, network_info)

    def reboot(self, instance, network_info, reboot_type: str) -> None:
        """Soft: clean shutdown (then hard); hard: immediate. Both restart
        the stub domain too: its target is bound to the old guest domid."""
        with self._operation(instance):
            built = self._require(instance)
            timeout = (self._ctx.conf.xen_stubdom.clean_shutdown_timeout
                       if reboot_type == 'SOFT' else None)
            self._stop(instance, built.guest, built.stubdom,
                       built.guest_uuid, clean_timeout=timeout)
            self._restart(instance, built, None, network_info)

    def restart_after_guest_reboot(self, instance_uuid: str) -> None:
        """The guest rebooted itself and XAPI halted it: start a fresh
        stub domain and the guest again (Nova's instance stays ACTIVE).

        A failure stops what was started (no stub domain without its
        guest) and is raised: the caller reports a stop to Nova.
        """
        from nova import context as nova_context
        from nova import objects
        instance = objects.Instance.get_by_uuid(
            nova_context.get_admin_context(), instance_uuid,
            expected_attrs=['flavor', 'info_cache'])
        network_info = instance.get_network_info()
        with self._operation(instance, 'guest_reboot'):
            built = self._require(instance)
            if self._power_state(built.guest) != xc.POWER_STATE_HALTED:
                return      # someone started it meanwhile
            with self._busy_lock:
                self._guest_rebooting.add(instance_uuid)
            try:
                # the old stub domain targets a domid that is gone
                self._stop(instance, None, built.stubdom, built.guest_uuid)
                self._restart(instance, built, None, network_info)
            finally:
                with self._busy_lock:
                    self._guest_rebooting.discard(instance_uuid)
        LOG.info('rebuilt after the guest\'s own reboot', instance=instance)

    def pause(self, instance) -> None:
        with self._operation(instance):
            built = self._require(instance)
            self._call('VM.pause', built.guest)

    def unpause(self, instance) -> None:
        with self._operation(instance):
            built = self._require(instance)
            self._call('VM.unpause', built.guest)

    # -- information ------------------------------------------------------
    def get_info(self, instance) -> hardware.InstanceInfo:
        found = self.guest_record(instance)
        if found is None:
            # the cache may lag just-created guests: ask XAPI once
            built = self._find_fresh(instance)
            if not built.guest:
                raise exception.InstanceNotFound(instance_id=instance.uuid)
            state = self._power_state(built.guest)
            try:
                oc = self._call('VM.get_other_config', built.guest)
            except xapi_errors.HandleInvalid:
                oc = {}
        else:
            state = found[1].get('power_state')
            oc = found[1].get('other_config') or {}
        nova_state = xpower.to_nova_power_state(state)
        with self._busy_lock:
            rebooting = instance.uuid in self._guest_rebooting
        if rebooting:
            nova_state = power_state.RUNNING
        elif state == xc.POWER_STATE_HALTED and oc.get(dc.OC_SUSPEND_IMAGE):
            # halted through XAPI with its image in our VDI: suspended
            nova_state = power_state.SUSPENDED
        return hardware.InstanceInfo(
            state=nova_state,
            internal_id=found[0] if found else None)

    def _our_guests(self) -> Dict[str, dict]:
        out = {}
        host = self._ctx.host_ref
        for ref, rec in self._ctx.cache.get_all('VM').items():
            oc = rec.get('other_config') or {}
            if oc.get(dc.OC_ROLE) != dc.ROLE_GUEST:
                continue
            if rec.get('resident_on') == host or (
                    rec.get('power_state') == xc.POWER_STATE_HALTED and
                    rec.get('affinity') == host):
                out[ref] = rec
        return out

    def list_instances(self) -> List[str]:
        return sorted(rec['name_label'] for rec in self._our_guests().values())

    def list_instance_uuids(self) -> List[str]:
        return sorted(rec['other_config'][dc.OC_NOVA_UUID]
                      for rec in self._our_guests().values())

    def get_diagnostics(self, instance) -> dict:
        built = self._require(instance)
        guest = self._call('VM.get_record', built.guest)
        stub = self._call('VM.get_record', built.stubdom)
        return {
            'power_state': guest['power_state'],
            'domid': int(guest['domid']),
            'memory_mb': int(guest['memory_static_max']) // dc.MiB,
            'vcpus': int(guest['VCPUs_max']),
            'stubdom_domid': int(stub['domid']),
            'stubdom_power_state': stub['power_state'],
            'stubdom_memory_mb': int(stub['memory_static_max']) // dc.MiB,
            'disks': len(guest['VBDs']),
            'nics': len(guest['VIFs']),
        }

    def resume_state_on_host_boot(self, instance, network_info) -> None:
        """After a host reboot: bring the guest back as Nova expects."""
        info = self.get_info(instance)
        if info.state == power_state.RUNNING:
            return
        self.power_on(instance, network_info)
