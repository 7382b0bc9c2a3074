"""XAPI objects for a host's PCI functions and NICs.

One ``PCI`` record per function of the host's :class:`sim.pci.PciHost`
(``dependencies`` as refs), and one ``PIF`` per function with a dom0
network interface: ``eth0`` is the management PIF on the pool network;
others get a network of their own.  An SR-IOV PF's PIF lists its VFs'
``PCI`` records in ``other_config:sriov_vfs``; VFs have no PIF.
"""
from nova_xen_stubdom.datamodel.schema import NULL_REF


def build(pool, host, network: str) -> None:
    db = pool.db
    refs = {}
    for dev in host.pci.devices.values():
        fields = dev.xapi_fields()
        fields['host'] = host.ref
        other = dict(fields.get('other_config') or {})
        if dev.physfn:
            other['physfn'] = dev.physfn
        if dev.sriov_totalvfs:
            other['sriov_totalvfs'] = str(dev.sriov_totalvfs)
        if dev.numa_node is not None:
            other['numa_node'] = str(dev.numa_node)
        fields['other_config'] = other
        refs[dev.address] = db.create('PCI', fields)
        db.link('host', host.ref, 'PCIs', refs[dev.address])
    for dev in host.pci.devices.values():
        deps = [refs[a] for a in dev.dependencies if a in refs]
        if deps:
            db.set('PCI', refs[dev.address], dependencies=deps)
    nics = [d for d in host.pci.devices.values() if d.netdev]
    if not any(d.netdev == 'eth0' for d in nics):
        nics.insert(0, None)      # a management PIF without a PCI function
    for n, dev in enumerate(nics):
        device = dev.netdev if dev else 'eth0'
        mgmt = device == 'eth0'
        net = network
        if not mgmt:
            net = db.create('network', {
                'name_label': 'Network on %s of %s' % (device, host.uuid),
                'bridge': 'xenbr-%s' % device, 'MTU': 1500,
                'managed': True})
        other = {}
        vfs = [refs[d.address] for d in host.pci.devices.values()
               if dev and d.physfn == dev.address]
        if vfs:
            other['sriov_vfs'] = ','.join(vfs)
        metrics = db.create('PIF_metrics', {'carrier': True,
                                            'speed': 10000})
        pif = db.create('PIF', {
            'device': device, 'network': net, 'host': host.ref,
            'MAC': '02:00:%02x:%02x:00:%02x' % (pool.index, host.index, n),
            'MTU': 1500, 'VLAN': -1, 'physical': True, 'management': mgmt,
            'currently_attached': True,
            'IP': host.address if mgmt else '',
            'netmask': '255.0.0.0' if mgmt else '',
            'ip_configuration_mode': 'Static' if mgmt else 'None',
            'metrics': metrics, 'managed': True,
            'PCI': refs[dev.address] if dev else NULL_REF,
            'other_config': other,
            'capabilities': ['sriov'] if vfs else []})
        db.link('host', host.ref, 'PIFs', pif)
        db.link('network', net, 'PIFs', pif)
        if vfs:
            _sriov(db, host, pif, dev, len(vfs))


def _sriov(db, host, pif: str, dev, nvfs: int) -> None:
    """XAPI's SR-IOV network: a logical PIF over the PF on its own
    network, linked by a ``network_sriov`` object."""
    net = db.create('network', {
        'name_label': 'SR-IOV network on %s of %s' % (dev.netdev,
                                                      host.uuid),
        'bridge': '', 'MTU': 1500, 'managed': True,
        'other_config': {'sriov_vfs': str(nvfs)}})
    logical = db.create('PIF', {
        'device': dev.netdev, 'network': net, 'host': host.ref,
        'MAC': db.get('PIF', pif)['MAC'], 'MTU': 1500, 'VLAN': -1,
        'physical': False, 'management': False, 'currently_attached': True,
        'managed': True, 'ip_configuration_mode': 'None'})
    sriov = db.create('network_sriov', {
        'physical_PIF': pif, 'logical_PIF': logical,
        'requires_reboot': False, 'configuration_mode': 'sysfs'})
    db.link('PIF', pif, 'sriov_physical_PIF_of', sriov)
    db.link('PIF', logical, 'sriov_logical_PIF_of', sriov)
    db.link('host', host.ref, 'PIFs', logical)
    db.link('network', net, 'PIFs', logical)
