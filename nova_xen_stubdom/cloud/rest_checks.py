"""The tempest plugin's scenarios over plain REST: the DEGRADED integration
check for when tempest (and keystone) cannot be installed.

Runs against a cloud started with ``cloud up --no-keystone``: nova-api
without authtoken, so every request carries the identity headers authtoken
would have set (``cloud.NOAUTH_HEADERS``).  What is checked is what
``nova_xen_stubdom_tempest_plugin`` checks, through the same read-only XAPI
client: the HVM guest's device model runs in a linked stub domain on the
host Nova chose (never in dom0), extra specs are validated (HTTP 400), power
transitions, live and cold migration, and a clean pool after delete.
This is NOT tempest: tempest's own compute API tests do not run here.
"""
import json
import time
import traceback
from typing import Any, Callable, Dict, List, Optional, TextIO, Tuple

import requests

from nova_xen_stubdom.cloud import cloud
from nova_xen_stubdom.cloud import layout as L
from nova_xen_stubdom_tempest_plugin import xapi

MiB = 1024 * 1024
# 2.86: extra specs validated; 2.25+: live migration with host=None and
# block_migration='auto'; 2.37+: networks='none'
MICROVERSION = 'compute 2.90'
BUILD_TIMEOUT = 240.0
XAPI_TIMEOUT = 60.0


class CheckFailed(AssertionError):
    pass


def expect(cond: bool, what: str, *detail: Any) -> None:
    if not cond:
        raise CheckFailed(what + (': %r' % (detail,) if detail else ''))


class Nova:
    """The compute API as an admin, with the headers authtoken would set."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = requests.Session()
        self.http.headers.update(cloud.NOAUTH_HEADERS)
        self.http.headers['OpenStack-API-Version'] = MICROVERSION

    def request(self, method: str, path: str, body: Any = None,
                ok: Tuple[int, ...] = (200, 201, 202, 204)
                ) -> requests.Response:
        r = self.http.request(method, self.base + path, timeout=120,
                              data=None if body is None else json.dumps(body))
        if r.status_code not in ok:
            raise CheckFailed('%s %s -> HTTP %d %s' % (
                method, path, r.status_code, r.text[:600]))
        return r

    def server(self, sid: str) -> Optional[Dict[str, Any]]:
        r = self.request('GET', '/servers/' + sid, ok=(200, 404))
        return None if r.status_code == 404 else r.json()['server']

    def action(self, sid: str, body: Dict[str, Any]) -> None:
        self.request('POST', '/servers/%s/action' % sid, body)

    def failed_migration(self, sid: str) -> Optional[str]:
        """The latest migration of *sid* if it failed (a failed live
        migration leaves the server ACTIVE on its source)."""
        migs = self.request('GET', '/os-migrations?instance_uuid=%s'
                            % sid).json()['migrations']
        bad = [m for m in migs if m['status'] in ('error', 'failed')]
        return ('%s migration %s: %s -> %s' % (
            bad[-1]['migration_type'], bad[-1]['status'],
            bad[-1]['source_compute'], bad[-1]['dest_compute'])
            if bad else None)

    def wait(self, sid: str, ok: Callable[[Dict[str, Any]], bool],
             what: str, timeout: float = BUILD_TIMEOUT,
             migrating: bool = False,
             accept_error: bool = False) -> Dict[str, Any]:
        """Poll the server until *ok*; ERROR fails the wait unless
        *accept_error* (then *ok* decides)."""
        deadline = time.monotonic() + timeout
        s = None
        while time.monotonic() < deadline:
            s = self.server(sid)
            expect(s is not None, '%s vanished while waiting for %s'
                   % (sid, what))
            if s['status'] == 'ERROR' and not accept_error:
                raise CheckFailed('%s went to ERROR waiting for %s: %s'
                                  % (sid, what, s.get('fault')))
            if ok(s):
                return s
            failed = migrating and self.failed_migration(sid)
            if failed:
                raise CheckFailed('waiting for %s: %s' % (what, failed))
            time.sleep(0.5)
        raise CheckFailed('timed out after %.0f s waiting for %s; last: %s'
                          % (timeout, what, s and (
                              s['status'], s.get('OS-EXT-STS:task_state'),
                              s.get('OS-EXT-SRV-ATTR:host'))))

    def wait_status(self, sid: str, status: str,
                    migrating: bool = False) -> Dict[str, Any]:
        return self.wait(sid, lambda s: s['status'] == status and
                         not s.get('OS-EXT-STS:task_state'),
                         '%s to be %s' % (sid, status), migrating=migrating)

    def wait_gone(self, sid: str) -> None:
        deadline = time.monotonic() + BUILD_TIMEOUT
        while time.monotonic() < deadline:
            if self.server(sid) is None:
                return
            time.sleep(0.5)
        raise CheckFailed('%s not deleted after %.0f s' % (sid,
                                                           BUILD_TIMEOUT))


class Checks:
    """One method per scenario; servers and flavors made are cleaned up."""

    def __init__(self, facts: Dict[str, Any], default_stub_mb: int) -> None:
        self.facts = facts
        self.nova = Nova(facts['compute'])
        self.xapi = xapi.XAPIReader(facts['xapi_url'], facts['xapi_username'],
                                    facts['xapi_password'])
        self.default_stub_mb = default_stub_mb
        self.servers: List[str] = []
        self.flavors: List[str] = []

    def close(self) -> None:
        self.xapi.close()

    # -- helpers (the plugin's base class, over REST) --------------------

    def flavor(self, ram: int = 512, disk: int = 1) -> str:
        fid = self.nova.request('POST', '/flavors', {'flavor': {
            'name': 'rest-check-%d' % (time.time() * 1000), 'ram': ram,
            'vcpus': 1, 'disk': disk}}).json()['flavor']['id']
        self.flavors.append(fid)
        return fid

    def specs(self, fid: str) -> Dict[str, str]:
        return self.nova.request(
            'GET', '/flavors/%s/os-extra_specs' % fid).json()['extra_specs']

    def boot(self, flavor: Optional[str] = None) -> Dict[str, Any]:
        sid = self.nova.request('POST', '/servers', {'server': {
            'name': 'rest-check', 'imageRef': self.facts['image_id'],
            'flavorRef': flavor or self.facts['flavors']['tempest.small'],
            'networks': 'none'}}).json()['server']['id']
        self.servers.append(sid)
        return self.nova.wait_status(sid, 'ACTIVE')

    def delete(self, sid: str) -> None:
        self.nova.request('DELETE', '/servers/' + sid, ok=(204, 404))
        self.nova.wait_gone(sid)
        if sid in self.servers:
            self.servers.remove(sid)

    def guest_and_stubdom(self, sid: str, power_state: str = 'Running'
                          ) -> Tuple[Tuple[str, dict], Tuple[str, dict]]:
        vms = self.xapi.wait(
            'the guest of %s to be %s' % (sid, power_state),
            lambda: self.xapi.vms_of(sid),
            lambda v: 'guest' in v and 'stubdom' in v and
            v['guest'][1]['power_state'] == power_state, XAPI_TIMEOUT)
        return vms['guest'], vms['stubdom']

    def assert_served_by_stubdom(self, server: Dict[str, Any]) -> None:
        sid = server['id']
        (g_ref, guest), (s_ref, stub) = self.guest_and_stubdom(sid)
        stub = self.xapi.wait(
            'the stub domain of %s to run' % sid,
            lambda: self.xapi.call('VM.get_record', s_ref),
            lambda r: r['power_state'] == 'Running', XAPI_TIMEOUT)
        expect(bool(guest['HVM_boot_policy']), 'guest is not HVM')
        expect(not stub['HVM_boot_policy'], 'stub domain is not PV')
        expect(bool(stub['PV_kernel']), 'stub domain has no kernel')
        expect(stub['uuid'] == guest['other_config'].get(xapi.STUBDOM_KEY),
               'guest does not name its stub domain')
        expect(guest['uuid'] == stub['other_config'].get(xapi.TARGET_KEY),
               'stub domain does not name its guest')
        nova_host = server['OS-EXT-SRV-ATTR:host']
        host_ref = self.xapi.host_by_name(
            self.facts['xapi_hosts'].get(nova_host, nova_host))
        expect(host_ref == guest['resident_on'] == stub['resident_on'],
               'guest/stub domain not on the Nova host %s' % nova_host,
               host_ref, guest['resident_on'], stub['resident_on'])
        wiring = self.xapi.wait(
            'the device model of %s to run' % sid,
            lambda: self.xapi.stubdom_wiring(host_ref, int(stub['domid'])),
            lambda w: w.get('state') == 'running', XAPI_TIMEOUT)
        guest = self.xapi.call('VM.get_record', g_ref)
        expect(int(guest['domid']) == wiring['target'],
               'stub domain targets another domain', wiring['target'],
               guest['domid'])
        # the device model lives in the stub domain; 0 would be dom0
        expect(str(wiring['device_model_domid']) == str(stub['domid']),
               'device model not in the stub domain', wiring)
        expect(str(wiring['device_model_domid']) != '0',
               'device model in dom0', wiring)

    # -- the scenarios ---------------------------------------------------

    def check_valid_extra_specs_accepted(self) -> None:
        fid = self.flavor()
        specs = {'xen_stubdom:memory_mb': '256', 'xen_stubdom:vcpus': '2',
                 'xen_stubdom:viridian': 'true'}
        self.nova.request('POST', '/flavors/%s/os-extra_specs' % fid,
                          {'extra_specs': specs})
        expect(self.specs(fid) == specs, 'extra specs not stored',
               self.specs(fid))

    def check_bad_extra_specs_refused(self) -> None:
        fid = self.flavor()
        for bad in ({'xen_stubdom:memory_mb': 'lots'},
                    {'xen_stubdom:memory_mb': '1'},
                    {'xen_stubdom:memory_mb': '99999999'},
                    {'xen_stubdom:vcpus': '0'},
                    {'xen_stubdom:viridian': 'perhaps'},
                    {'xen_stubdom:no_such_key': '1'}):
            r = self.nova.request('POST', '/flavors/%s/os-extra_specs' % fid,
                                  {'extra_specs': bad}, ok=(200, 400))
            expect(r.status_code == 400, 'bad extra spec accepted', bad)
        expect(self.specs(fid) == {}, 'a refusal changed the flavor',
               self.specs(fid))
        self.nova.request('POST', '/flavors/%s/os-extra_specs' % fid,
                          {'extra_specs': {'xen_stubdom:memory_mb': '192'}})
        key = 'xen_stubdom:memory_mb'
        r = self.nova.request('PUT', '/flavors/%s/os-extra_specs/%s'
                              % (fid, key), {key: 'x'}, ok=(200, 400))
        expect(r.status_code == 400, 'bad extra spec accepted at update')
        expect(self.specs(fid) == {key: '192'},
               'a refused update changed the flavor', self.specs(fid))

    def check_hvm_guest_served_by_linked_stubdom(self) -> None:
        fid = self.flavor()
        self.nova.request('POST', '/flavors/%s/os-extra_specs' % fid,
                          {'extra_specs': {'xen_stubdom:memory_mb': '160'}})
        server = self.boot(fid)
        self.assert_served_by_stubdom(server)
        (_, guest), (_, stub) = self.guest_and_stubdom(server['id'])
        expect(int(stub['memory_static_max']) == 160 * MiB,
               'extra spec did not size the stub domain',
               stub['memory_static_max'])
        expect(int(guest['memory_static_max']) == 512 * MiB,
               'flavor RAM did not size the guest',
               guest['memory_static_max'])
        self.delete(server['id'])

    def check_default_stubdom_size(self) -> None:
        server = self.boot()
        _, (_, stub) = self.guest_and_stubdom(server['id'])
        expect(int(stub['memory_static_max']) == self.default_stub_mb * MiB,
               'stub domain not of the default size %d MiB'
               % self.default_stub_mb, stub['memory_static_max'])
        self.delete(server['id'])

    def check_reboot_stop_start_pause(self) -> None:
        server = self.boot()
        sid = server['id']
        for kind in ('SOFT', 'HARD'):
            self.nova.action(sid, {'reboot': {'type': kind}})
            self.nova.wait_status(sid, 'ACTIVE')
            self.assert_served_by_stubdom(server)
        self.nova.action(sid, {'os-stop': None})
        self.nova.wait_status(sid, 'SHUTOFF')
        _, (s_ref, _) = self.guest_and_stubdom(sid, 'Halted')
        # a stub domain never outlives the running guest it serves
        self.xapi.wait('the stub domain to stop with its guest',
                       lambda: self.xapi.call('VM.get_power_state', s_ref),
                       lambda p: p == 'Halted', XAPI_TIMEOUT)
        self.nova.action(sid, {'os-start': None})
        self.nova.wait_status(sid, 'ACTIVE')
        self.assert_served_by_stubdom(server)
        self.nova.action(sid, {'pause': None})
        self.nova.wait_status(sid, 'PAUSED')
        self.guest_and_stubdom(sid, 'Paused')
        self.nova.action(sid, {'unpause': None})
        self.nova.wait_status(sid, 'ACTIVE')
        self.assert_served_by_stubdom(server)
        self.delete(sid)

    def _moved(self, sid: str, source: str, before: dict) -> None:
        moved = self.nova.server(sid)
        self.assert_served_by_stubdom(moved)
        (_, guest), (_, stub) = self.guest_and_stubdom(sid)
        expect(guest['resident_on'] != before['resident_on'],
               'guest still on the source XAPI host')
        expect(guest['resident_on'] == stub['resident_on'],
               'guest and stub domain on different hosts')
        expect(sorted(self.xapi.vms_of(sid)) == ['guest', 'stubdom'],
               'not exactly one guest and one stub domain in the pool',
               sorted(self.xapi.vms_of(sid)))

    def check_live_migration_moves_guest_and_stubdom(self) -> None:
        server = self.boot()
        sid, source = server['id'], server['OS-EXT-SRV-ATTR:host']
        (_, before), _ = self.guest_and_stubdom(sid)
        self.nova.action(sid, {'os-migrateLive': {
            'host': None, 'block_migration': 'auto'}})
        self.nova.wait(sid, lambda s: (
            s['status'] == 'ACTIVE' and not s['OS-EXT-STS:task_state'] and
            s['OS-EXT-SRV-ATTR:host'] != source),
            '%s to land on another host' % sid, migrating=True)
        self._moved(sid, source, before)
        self.delete(sid)

    def check_cold_migration_and_confirm(self) -> None:
        server = self.boot()
        sid, source = server['id'], server['OS-EXT-SRV-ATTR:host']
        (_, before), _ = self.guest_and_stubdom(sid)
        self.nova.action(sid, {'migrate': None})
        s = self.nova.wait_status(sid, 'VERIFY_RESIZE', migrating=True)
        expect(s['OS-EXT-SRV-ATTR:host'] != source,
               'cold migration stayed on %s' % source)
        self.nova.action(sid, {'confirmResize': None})
        self.nova.wait_status(sid, 'ACTIVE')
        self._moved(sid, source, before)
        self.delete(sid)

    def check_delete_leaves_nothing_on_the_host(self) -> None:
        server = self.boot()
        sid = server['id']
        self.guest_and_stubdom(sid)
        expect(self.xapi.vdis_of(sid) != [], 'no VDI for the server')
        self.delete(sid)
        left = self.xapi.wait(
            'XAPI to forget %s' % sid,
            lambda: (self.xapi.vms_of(sid), self.xapi.vdis_of(sid)),
            lambda v: not v[0] and not v[1], XAPI_TIMEOUT)
        expect(left == ({}, []), 'left in XAPI after delete', left)

    # -- running -----------------------------------------------------------

    def names(self) -> List[str]:
        return [n for n in dir(self) if n.startswith('check_')]

    def cleanup(self) -> List[str]:
        """Delete what a failed check left; returns what could not be."""
        problems = []
        for sid in list(self.servers):
            try:
                self.delete(sid)
            except (CheckFailed, requests.RequestException) as e:
                problems.append('server %s: %s' % (sid, e))
        for fid in self.flavors:
            try:
                self.nova.request('DELETE', '/flavors/' + fid, ok=(202, 404))
            except (CheckFailed, requests.RequestException) as e:
                problems.append('flavor %s: %s' % (fid, e))
        self.flavors = []
        return problems


def run(facts: Dict[str, Any], default_stub_mb: int, only: str,
        out: TextIO) -> Tuple[int, int]:
    """Run the checks; returns (passed, failed)."""
    checks = Checks(facts, default_stub_mb)
    passed = failed = 0
    try:
        for name in checks.names():
            if only and only not in name:
                continue
            t0 = time.monotonic()
            try:
                getattr(checks, name)()
            except Exception as e:  # noqa: B902 - any error fails the check
                failed += 1
                out.write('FAIL %s (%.1f s): %s\n' % (
                    name[6:], time.monotonic() - t0, e))
                if not isinstance(e, CheckFailed):
                    out.write(traceback.format_exc())
            else:
                passed += 1
                out.write('ok   %s (%.1f s)\n' % (name[6:],
                                                  time.monotonic() - t0))
            for problem in checks.cleanup():
                failed += 1
                out.write('FAIL cleanup after %s: %s\n' % (name[6:],
                                                           problem))
            out.flush()
    finally:
        checks.close()
    return passed, failed


def main(lay: L.Layout, only: str, out: TextIO) -> int:
    if not lay.state_file.exists():
        out.write('rest-checks: the cloud is not up (no %s)\n'
                  % lay.state_file)
        return 1
    facts = json.loads(lay.state_file.read_text())
    if facts.get('keystone'):
        # with keystone, nova-api wants tokens: that is tempest's job
        out.write('rest-checks: the cloud runs keystone; use tempest '
                  '(these checks are for "cloud up --no-keystone")\n')
        return 1
    if not facts.get('xapi_url'):
        out.write('rest-checks: the cloud does not run the xen_stubdom '
                  'driver\n')
        return 1
    # the compute hosts run with the option's default
    from nova_xen_stubdom import conf as nxs_conf
    default_mb = next(o.default for o in nxs_conf.ALL_OPTS
                      if o.name == 'stubdom_memory_mb')
    out.write('rest-checks: the tempest plugin\'s scenarios over REST '
              '(NOT tempest) against %s\n' % facts['compute'])
    passed, failed = run(facts, default_mb, only, out)
    out.write('rest-checks: %d passed, %d failed\n' % (passed, failed))
    return 1 if failed or not passed else 0
