"""Starting a guest with its stub domain, and the device model's config.

The order is fixed by Xen: the stub domain runs first (QEMU's target is
bound to the guest's domid once, ``xc_domain_set_target``), the dom0 agent
links the two and hands QEMU its configuration, then the guest starts and
the start is complete only once QEMU in the stub domain reports
``running``.  Spawn, power on, reboot, resize and rebuild share this path;
suspend/resume and live migration start the guest paused instead
(suspendops, livemigration_prepare) but reuse :meth:`VMStarter.dm_config`
and :meth:`VMStarter.wait_dm`.
"""
import time
from typing import Callable, List, Optional

from oslo_log import log as logging

from nova.i18n import _

from nova_xen_stubdom.driver import common
from nova_xen_stubdom.driver import constants as dc
from nova_xen_stubdom.driver import exceptions as dexc
from nova_xen_stubdom.driver import vmbuild

LOG = logging.getLogger(__name__)

DM_POLL_INTERVAL = 0.1


class VMStarter(common.XapiUser):
    """Starts an instance's guest with its stub domain (VMOps.starter).

    :param volumes: ``volumeutils.VolumeStorage`` (volume disks for QEMU).
    :param pciops: ``pciops.PciOps`` or None (no PCI pass-through).
    """

    def __init__(self, ctx, volumes, pciops=None) -> None:
        self._ctx = ctx
        #: volumeutils.VolumeStorage: attached volumes' disks for QEMU
        self._volumes = volumes
        self._pciops = pciops

    def dm_config(self, instance, cfg, vifs,
                  guest: Optional[str] = None) -> dict:
        """What the agent hands QEMU: the flavor's disks and Nova's NICs;
        with *guest*, the disks, NICs and CD-ROMs XAPI has on it now
        (volumes and interfaces attached since spawn)."""
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
            config['disks'] += self._volumes.dm_disks(
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

    def start(self, instance, built: vmbuild.Built, cfg, vifs,
              do: Optional[Callable] = None, paused: bool = False) -> None:
        """Stub domain first, link, then the guest; wait for the DM.

        *paused*: the guest's domain stays paused (resume and the live
        migration destination fill its memory first); its device model is
        configured as for any start, from what XAPI has on the guest."""
        do = do or vmbuild.direct
        host = self._ctx.host_ref
        do('VM.start_on (stub domain)', self._ctx.call_async,
           'VM.start_on', built.stubdom, host, False, False)
        stub_domid = int(do('VM.get_domid (stub domain)', self._call,
                            'VM.get_domid', built.stubdom))
        do('agent link_stubdom', self._ctx.call_plugin, 'link_stubdom',
           stubdom_domid=stub_domid, guest_vm_uuid=built.guest_uuid,
           config=self.dm_config(instance, cfg, vifs, built.guest))
        if self._pciops is not None and hasattr(self._pciops, 'assign'):
            do('PCI assign', self._pciops.assign, instance, built.guest)
        do('VM.start_on (HVM guest)', self._ctx.call_async, 'VM.start_on',
           built.guest, host, paused, False)
        guest_domid = int(do('VM.get_domid (HVM guest)', self._call,
                             'VM.get_domid', built.guest))
        do('wait for the device model', self.wait_dm, instance,
           stub_domid, guest_domid)

    def wait_dm(self, instance, stub_domid: int, guest_domid: int) -> None:
        """Until QEMU in stub domain *stub_domid* reports ``running`` for
        *guest_domid*; :class:`StubdomStartFailed` when it fails or
        ``device_model_start_timeout`` passes."""
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
