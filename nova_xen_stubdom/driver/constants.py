"""Names the driver writes into XAPI: the contract other modules rely on.

The guest and its stub domain are two XAPI VMs; these ``other_config`` keys
tie them to the Nova instance and to each other (see _work notes / doc).
"""

#: other_config key holding the Nova instance uuid (guest, stubdom, VDIs)
OC_NOVA_UUID = 'nova_uuid'
#: other_config key: 'guest' or 'stubdom'
OC_ROLE = 'nova_xen_stubdom_role'
#: on the guest VM: uuid of its stub domain VM
OC_STUBDOM = 'nova_xen_stubdom_stubdom'
#: on the stubdom VM: uuid of the guest VM it serves
OC_TARGET = 'nova_xen_stubdom_target'
#: XAPI's own key: xenopsd starts no vncterm for a PV VM that has it
OC_DISABLE_PV_VNC = 'disable_pv_vnc'
#: on stubdom VBDs/VIFs: uuid of the guest VBD/VIF they mirror
OC_MIRROR_OF = 'nova_xen_stubdom_mirror_of'
#: on a guest VIF: the Neutron port id it carries (interface detach
#: finds the NIC by it)
OC_VIF_ID = 'nova_vif_id'
#: on the VBDs (guest and stub-domain mirror) of a Cinder volume: its id
OC_VOLUME_ID = 'nova_xen_stubdom_volume_id'
#: on VDIs: which disk of the instance ('root')
OC_DISK = 'nova_xen_stubdom_disk'
#: on the guest VM: its pass-through devices (``0/0000:81:00.0,1/...``),
#: handled by the dom0 agent.  Not ``pci``: that key is xenopsd's own
#: unmanaged pass-through (xen-api ocaml/xapi/xapi_xenops.ml pcis_of_vm),
#: which would assign the devices to the guest a second time.
OC_PCI = 'nova_xen_stubdom_pci'
#: on a suspended guest VM (XAPI power state Halted): uuid of the VDI we
#: own that holds its save image.  Not XAPI's Suspended state: XAPI's
#: suspend drives xenopsd's own save (QMP to a dom0 QEMU) and
#: VM.set_suspend_VDI accepts only an identical image -- see
#: doc/source/xapi-behaviour.rst.
OC_SUSPEND_IMAGE = 'nova_xen_stubdom_suspend_image'
#: xenopsd's key: never written by the driver; read to find devices other
#: VMs hold, and removed from our guests written by older versions
OC_XENOPSD_PCI = 'pci'

#: VM.xenstore_data key on the guest VM (value: the Nova instance uuid)
#: that tells the dom0 device-model wrapper the VM is ours even without a
#: stub domain link, so it never hands it to the stock wrapper's dom0 QEMU.
#: XAPI passes VM.xenstore_data to xenopsd unchanged (xen-api
#: ocaml/xapi/xapi_xenops.ml MD.of_vm ``xsdata``) and xenopsd's Domain.make
#: writes keys under ``vm-data/`` to /local/domain/<domid>/ (domain.ml
#: ``filtered_xsdata``); platform:stubdom instead is dropped by XAPI's
#: platform filter (Vm_platform.sanity_check) unless the pool has
#: No_platform_filter.  dom0/device_model.py MARKER_KEYS reads it.
XS_MANAGED = 'vm-data/nova_xen_stubdom'

#: the instance's disks and their XAPI userdevice, on the guest and on its
#: stub domain's mirror VBD alike (xvda, xvdb, xvdc in the stub domain)
DISK_USERDEVICE = {'root': 0, 'ephemeral': 1, 'swap': 2}

ROLE_GUEST = 'guest'
ROLE_STUBDOM = 'stubdom'

#: suffix of the stub domain VM's name_label
STUBDOM_SUFFIX = '-dm'

#: the agent's host plugin (host.call_plugin)
AGENT_PLUGIN = 'nova_xen_stubdom'

#: device-model state QEMU in the stubdom reports when it serves the guest
DM_RUNNING = 'running'

#: XAPI classes the event cache follows (PBD: which SRs a host has plugged)
CACHED_CLASSES = ('VM', 'VM_metrics', 'host', 'host_metrics', 'SR', 'PBD',
                  'VDI', 'VBD', 'VIF', 'network', 'pool', 'console')

MiB = 1024 * 1024
GiB = 1024 * MiB
