"""``nova-xen-stubdom demo``: an HVM guest with a stub-domain device model,
booted, shown, stopped, started and deleted through an in-process Nova.

The simulator serves two XAPI hosts over HTTP on loopback; Nova's own
in-process harness (shipped in the ``nova`` wheel) runs the API, conductor,
scheduler, placement and two nova-computes whose ``compute_driver`` is
``xen_stubdom.XenStubdomDriver``.  Nothing outside this process is needed.
"""
import argparse
import io
import os
import sys
import time
from typing import List, Optional, Sequence

SIM_USER = 'root'
SIM_PASSWORD = 'demo-password'
COMPUTES = ('host1', 'host2')


class _Out:
    """Progress lines on stdout, with the seconds since the start."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self.t0 = time.monotonic()

    def __call__(self, text: str = '') -> None:
        self.stream.write('[%6.2fs] %s\n'
                          % (time.monotonic() - self.t0, text))
        self.stream.flush()

    def detail(self, text: str) -> None:
        self.stream.write('           %s\n' % text)
        self.stream.flush()


def _make_case(out: _Out, result: dict):
    # NOTE: imported here: nova.tests.functional decides monkey patching on
    # import, after main() has chosen the concurrency mode
    from nova.tests.functional import integrated_helpers

    import XenAPI

    from nova_xen_stubdom import conf as xconf  # noqa: F401 (options)
    from nova_xen_stubdom.dom0 import registry as plugin
    from nova_xen_stubdom.driver import constants as dc
    from nova_xen_stubdom.sim import server as sim_server

    plugin.functions()      # load agent modules before Nova's fixtures

    class Demo(integrated_helpers.ProviderUsageBaseTestCase):
        compute_driver = 'xen_stubdom.XenStubdomDriver'

        def setUp(self):
            self.flags(group='wsgi', api_paste_config=os.path.join(
                sys.prefix, 'etc', 'nova', 'api-paste.ini'))
            out('starting the XAPI simulator: %d hosts in one pool'
                % len(COMPUTES))
            sim = self.sim = sim_server.SimServer(
                hosts=len(COMPUTES), username=SIM_USER,
                password=SIM_PASSWORD)
            sim.start()
            self.addCleanup(sim.stop)
            self.addCleanup(self._final_check, sim)
            x = self._login()
            for name, host in zip(COMPUTES, sim.hosts):
                x.xenapi.host.set_name_label(host.ref, name)
            x.xenapi.session.logout()
            out.detail('XAPI at %s (hosts %s)' % (
                sim.url, ', '.join('%s=%s' % (n, h.address)
                                   for n, h in zip(COMPUTES, sim.hosts))))
            self.flags(group='xen_stubdom', connection_url=sim.url,
                       connection_username=SIM_USER,
                       connection_password=SIM_PASSWORD,
                       network_name_label='Pool-wide network associated '
                                          'with eth0')
            out('starting Nova in this process: API, conductor, scheduler, '
                'placement')
            super().setUp()
            self.addCleanup(self._cleanup_drivers)
            self.computes_by_name = {}
            for name in COMPUTES:
                out('starting nova-compute %s (compute_driver = '
                    'xen_stubdom.XenStubdomDriver)' % name)
                self.computes_by_name[name] = self._start_compute(name)

        def _cleanup_drivers(self):
            for name, compute in self.__dict__.get(
                    'computes_by_name', {}).items():
                compute.manager.driver.cleanup_host(host=name)

        def _clear_attrs(self):
            pass        # keep attributes: the demo reads them at the end

        def _login(self):
            session = XenAPI.Session(self.sim.url)
            session.login_with_password(SIM_USER, SIM_PASSWORD, '2.0',
                                        'demo')
            return session

        def _vms(self, x, server_id):
            guest = stub = None
            for ref, rec in x.VM.get_all_records().items():
                oc = rec['other_config']
                if oc.get(dc.OC_NOVA_UUID) != server_id:
                    continue
                if oc.get(dc.OC_ROLE) == dc.ROLE_GUEST:
                    guest = rec
                elif oc.get(dc.OC_ROLE) == dc.ROLE_STUBDOM:
                    stub = rec
            return guest, stub

        def _show(self, server):
            session = self._login()
            x = session.xenapi
            try:
                guest, stub = self._vms(x, server['id'])
                host = server['OS-EXT-SRV-ATTR:host']
                runtime = self.sim.hosts[COMPUTES.index(host)]
                hv = runtime.hypervisor
                mib = 1 << 20
                out('what was built on %s:' % host)
                for label, rec, kind in (('guest', guest, 'HVM'),
                                         ('stubdom', stub, 'PV')):
                    out.detail('%-8s %-22s domid %-3s %s  %5d MiB  %s vCPU'
                               '  %s' % (label, rec['name_label'],
                                         rec['domid'], kind,
                                         int(rec['memory_static_max'])
                                         // mib, rec['VCPUs_max'],
                                         rec['power_state']))
                xs = hv.xenstore
                sd, gd = stub['domid'], guest['domid']
                out.detail('xenstore: /local/domain/%s/target = %s, '
                           '/local/domain/%s/image/device-model-domid = %s'
                           % (sd, xs.read('/local/domain/%s/target' % sd),
                              gd, xs.read('/local/domain/%s/image/'
                                          'device-model-domid' % gd)))
                out.detail('device model state: %s (QEMU in domain %s; '
                           'device models in dom0: %d)' % (
                               xs.read('/local/domain/%s/device-model/%s/'
                                       'state' % (sd, gd)),
                               hv.device_models.get(int(gd)),
                               sum(1 for d in hv.device_models.values()
                                   if d == 0)))
                argv = (xs.read('/local/domain/%s/dm-argv' % sd) or ''
                        ).split('\x1b')
                out.detail('dm-argv: %s' % ' '.join(argv))
                for vm_label, rec in (('guest', guest), ('stubdom', stub)):
                    for vbd in rec['VBDs']:
                        b = x.VBD.get_record(vbd)
                        vdi = x.VDI.get_record(b['VDI'])
                        out.detail('%-8s disk %s: VDI %s (%d GiB)' % (
                            vm_label, b['userdevice'], vdi['name_label'],
                            int(vdi['virtual_size']) >> 30))
                    for vif in rec['VIFs']:
                        v = x.VIF.get_record(vif)
                        out.detail('%-8s nic  %s: MAC %s' % (
                            vm_label, v['device'], v['MAC']))
                fe = hv.frontends_of(int(sd))
                out.detail('PV frontends of the stub domain: %s' % ', '.join(
                    sorted('%s/%s' % (f.kind, f.devid) for f in fe)))
                return guest, stub
            finally:
                session.xenapi.session.logout()

        def _final_check(self, sim):
            left = {}
            for key, value in sim.leaks().items():
                for kind, items in value.items():
                    if kind == 'pci_clean':
                        if not items:
                            left[key + '.pci'] = 'grants left'
                    elif items:
                        left['%s.%s' % (key, kind)] = items
            result['leaks'] = left

        def runTest(self):
            flavor = self._create_flavor(
                name='demo.small', memory_mb=512, vcpu=1, disk=2,
                ephemeral=0, extra_spec={'xen_stubdom:memory_mb': '128'})
            out('created flavor demo.small: 512 MiB, 1 vCPU, 2 GiB root '
                'disk, stub domain 128 MiB (xen_stubdom:memory_mb)')
            from oslo_utils import uuidutils
            image_id = uuidutils.generate_uuid()
            meta = {'id': image_id, 'name': 'demo-raw-image',
                    'status': 'active', 'container_format': 'bare',
                    'disk_format': 'raw', 'size': 0, 'min_ram': 0,
                    'min_disk': 0, 'is_public': True,
                    'properties': {'hw_video_model': 'vga',
                                   'hw_disk_bus': 'ide',
                                   'hw_vif_model': 'e1000'}}
            # 1 MiB that starts like a boot sector
            data = io.BytesIO(b'\xeb\x3c\x90' + b'\0' * ((1 << 20) - 3))
            self.glance.create(None, meta, data=data)
            out('created image demo-raw-image (raw, 1 MiB, hw_video_model='
                'vga, hw_disk_bus=ide, hw_vif_model=e1000)')
            port = self.neutron.port_1
            out('booting server demo-1 with one Neutron port (MAC %s)'
                % port['mac_address'])
            t = time.monotonic()
            server = self._create_server(
                name='demo-1', flavor_id=flavor, image_uuid=image_id,
                networks=[{'port': port['id']}])
            result['boot_s'] = time.monotonic() - t
            host = server['OS-EXT-SRV-ATTR:host']
            driver = self.computes_by_name[host].manager.driver
            result['spawn_calls'] = list(
                driver._vmops.call_stats.get('spawn', []))
            out('demo-1 is %s on %s after %.2fs (%d XAPI calls by the '
                'driver)' % (server['status'], host, result['boot_s'],
                             len(result['spawn_calls'])))
            self._show(server)

            t = time.monotonic()
            server = self._stop_server(server)
            result['stop_s'] = time.monotonic() - t
            session = self._login()
            guest, stub = self._vms(session.xenapi, server['id'])
            session.xenapi.session.logout()
            out('stopped: server %s, guest %s, stub domain %s (%.2fs)' % (
                server['status'], guest['power_state'], stub['power_state'],
                result['stop_s']))

            t = time.monotonic()
            server = self._start_server(server)
            result['start_s'] = time.monotonic() - t
            out('started again: %s (%.2fs), new domains:' % (
                server['status'], result['start_s']))
            self._show(server)

            t = time.monotonic()
            self._delete_server(server)
            result['delete_s'] = time.monotonic() - t
            result['destroy_calls'] = list(
                driver._vmops.call_stats.get('destroy', []))
            session = self._login()
            gone = self._vms(session.xenapi, server['id']) == (None, None)
            session.xenapi.session.logout()
            out('deleted in %.2fs (%d XAPI calls by the driver); guest and '
                'stub domain gone from XAPI: %s' % (
                    result['delete_s'], len(result['destroy_calls']), gone))
            result['ok'] = gone

    return Demo()


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog='nova-xen-stubdom demo',
        description='Boot, show, stop, start and delete an HVM guest whose '
                    'device model runs in a Linux stub domain, through an '
                    'in-process Nova and the embedded XAPI simulator.')
    parser.add_argument('--eventlet', action='store_true',
                        help='run Nova in eventlet mode (default: native '
                             'threads, Nova 34\'s default)')
    parser.add_argument('--verbose', action='store_true',
                        help='show Nova\'s and the driver\'s logs')
    args = parser.parse_args(list(argv or []))
    if not args.eventlet:
        os.environ.setdefault('OS_NOVA_DISABLE_EVENTLET_PATCHING', 'true')
    if args.verbose:
        os.environ['OS_DEBUG'] = '1'
    out = _Out()
    out('nova-xen-stubdom demo (%s mode)' % (
        'eventlet' if args.eventlet else 'native threading'))
    result: dict = {}
    case = _make_case(out, result)
    import unittest
    test_result = unittest.TestResult()
    case.run(test_result)
    problems: List[str] = []
    for _test, tb in test_result.errors + test_result.failures:
        problems.append(tb)
    if result.get('leaks'):
        problems.append('left behind: %s' % result['leaks'])
    out('summary:')
    for key, label in (('boot_s', 'boot (API -> ACTIVE)'),
                       ('stop_s', 'stop'), ('start_s', 'start'),
                       ('delete_s', 'delete')):
        if key in result:
            out.detail('%-22s %6.2fs' % (label, result[key]))
    for key, label in (('spawn_calls', 'XAPI calls per spawn'),
                       ('destroy_calls', 'XAPI calls per destroy')):
        if key in result:
            counts: dict = {}
            for name in result[key]:
                counts[name] = counts.get(name, 0) + 1
            out.detail('%-22s %6d  (%s)' % (
                label, len(result[key]),
                ', '.join('%s x%d' % kv for kv in counts.items())))
    out.detail('%-22s %s' % ('left behind', result.get('leaks') or
                             'nothing (no VM, VDI, VBD, VIF, domain, '
                             'session)'))
    if problems or not result.get('ok'):
        for text in problems:
            sys.stderr.write(text + '\n')
        out('demo FAILED')
        return 1
    out('demo OK')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
