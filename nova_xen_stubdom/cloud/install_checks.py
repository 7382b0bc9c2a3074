"""``cloud install-checks``: the package installed the ways operators
install it, checked inside the RUNNING cloud.

The cloud's own venv holds Nova and this package in one site directory.
Two other layouts must work too, and both are checked here by swapping
one service of the running cloud at a time for a process of the other
layout (the cloud is not restarted; each swapped service is put back):

* **split sites** -- Nova from distribution packages in one site directory
  (``/usr/lib/python3/dist-packages``), this package from pip in another
  (``/usr/local/lib/python3.X/dist-packages``).  Python imports ``nova``
  from the directory holding ``nova/__init__.py``, so the loader shim pip
  put into the *other* directory's ``nova/virt/`` is found only by our
  start-up hook (``objects/hook.py``).  nova-compute of host1 is restarted
  from such a layout: it must load ``compute_driver =
  xen_stubdom.XenStubdomDriver``, report its resources and register.
* **broken package** -- the same split layout with this package's driver
  and migrate-data modules raising ImportError on import (a missing
  dependency, a Nova it does not fit).  An extra nova-api (own port) and
  the conductor (swapped) run from it: nova-api must serve requests,
  the conductor must build a server and survive a live migration whose
  ``migrate_data`` it cannot deserialise (the migration fails, the server
  stays ACTIVE where it was).

The "distribution" site directory is a tree of symlinks to the cloud
venv's site-packages without any file of this project; the pip side is a
fresh venv (``python -m venv``) into which the cloud's wheel of this
project is pip-installed, with the distribution's directory added by a
``.pth`` line (``site.addsitedir``: after pip's, as on Debian).
"""
import datetime
import json
import os
import shutil
import subprocess
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, TextIO

from nova_xen_stubdom.cloud import keystone
from nova_xen_stubdom.cloud import layout as L
from nova_xen_stubdom.cloud import procs
from nova_xen_stubdom.cloud import rest_checks
from nova_xen_stubdom.cloud import services
from nova_xen_stubdom_tempest_plugin import xapi

# Top-level names of this project in a site directory (packages, the
# tempest plugin, dist-info, the start-up hook's .pth): none of them is in
# the "distribution" site.
OURS_PREFIX = 'nova_xen_stubdom'
SHIM = ('nova', 'virt', 'xen_stubdom')
# The modules the broken layout's import fails in: what nova-api
# (api_validators -> driver) and every service (the hook -> migrate_data)
# import of ours.
BROKEN_MODULES = ('nova_xen_stubdom/driver/__init__.py',
                  'nova_xen_stubdom/objects/migrate_data.py')
BROKEN_TEXT = ('raise ImportError("simulated by cloud install-checks: a '
               'dependency of nova-xen-stubdom is missing")\n')
# The extra nova-api of the broken layout (beside the cloud's on 8774).
BROKEN_API_PORT = 18774
COMPUTE = 'nova-compute-host1'
SWAPPED_HOST = 'host1'
START_TIMEOUT = 180.0
# printed by the swapped processes before Nova starts (their .out file)
WHERE_MARK = 'install-checks: '
WHERE_CODE = ('import importlib.util, sys; import nova.cmd; '
              'import nova.virt as v; '
              's = importlib.util.find_spec("nova.virt.xen_stubdom"); '
              'print("%s nova.virt=%%s shim=%%s" %% (v.__path__[0], '
              's and s.origin), flush=True); ' % WHERE_MARK)


# one failure type for both runners: rest_checks.Nova's requests and
# waits raise rest_checks.CheckFailed, which the runner below must tell
# from an unexpected error
CheckFailed = rest_checks.CheckFailed
expect = rest_checks.expect


def _purelib(python: str) -> Path:
    out = subprocess.run(
        [python, '-c', 'import sysconfig; '
         'print(sysconfig.get_paths()["purelib"])'],
        check=True, capture_output=True, text=True, timeout=60,
        env={k: v for k, v in os.environ.items() if k != 'PYTHONPATH'})
    return Path(out.stdout.strip())


def distro_site(src: Path, dest: Path) -> Path:
    """*dest*: *src* (a site directory) as symlinks, without this
    project's files -- Nova and its dependencies, as a distribution
    installs them."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)

    def farm(here: Path, there: Path, skip: Callable[[str], bool],
             deeper: Dict[str, Any]) -> None:
        for name in sorted(os.listdir(there)):
            if skip(name) or name == '__pycache__':
                continue
            if name in deeper:
                (here / name).mkdir()
                farm(here / name, there / name, lambda n: False,
                     deeper[name])
            else:
                os.symlink(there / name, here / name)

    # nova/ and nova/virt/ are real directories so that the shim can be
    # left out; everything else is a link
    farm(dest, src, lambda n: n.startswith(OURS_PREFIX),
         {'nova': {'virt': {}}})
    shim = dest.joinpath(*SHIM)
    if shim.is_symlink():
        shim.unlink()
    return dest


def pip_venv(lay: L.Layout, venv: Path, wheel: Path, distro: Path,
             broken: bool) -> Path:
    """A fresh venv with *wheel* pip-installed into its site-packages and
    *distro* added as a site directory after it; returns its python."""
    if venv.exists():
        shutil.rmtree(venv)
    base = lay.nova_bin('python')
    # lay.env(): no PYTHONPATH (a checkout on it would satisfy pip)
    subprocess.run([base, '-m', 'venv', '--without-pip', str(venv)],
                   check=True, timeout=120, env=lay.env())
    python = str(venv / 'bin' / 'python')
    log = lay.log('install-checks-pip')
    procs.run([lay.nova_bin('pip'), '--python', python, 'install', '-q',
               '--disable-pip-version-check', '--no-deps', '--no-index',
               '--no-compile', str(wheel)], log, env=lay.env(), timeout=300)
    site = _purelib(python)
    # "zz": after our own .pth, as Debian's dist-packages comes after
    # /usr/local's; a site directory, so its own .pth files are read too
    (site / 'zz-distro-site.pth').write_text(
        'import site; site.addsitedir(%r)\n' % str(distro))
    if broken:
        for rel in BROKEN_MODULES:
            (site / rel).write_text(BROKEN_TEXT)
    return python


def _utc(text: Optional[str]) -> Optional[datetime.datetime]:
    if not text:
        return None
    text = text.replace('Z', '')
    if '+' in text:
        text = text.split('+')[0]
    return datetime.datetime.fromisoformat(text)


def _now_utc() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(
        tzinfo=None, microsecond=0)


class Checks:
    """One method per check, run in order (each leaves the cloud as it
    found it)."""

    def __init__(self, lay: L.Layout, facts: Dict[str, Any], wheel: Path,
                 out: TextIO) -> None:
        self.lay = lay
        self.facts = facts
        self.out = out
        self.work = lay.data / 'install-checks'
        self.work.mkdir(parents=True, exist_ok=True)
        nova_site = _purelib(lay.nova_bin('python'))
        self.distro = distro_site(nova_site, self.work / 'distro-site')
        self.split_py = pip_venv(lay, self.work / 'venv-split', wheel,
                                 self.distro, broken=False)
        self.broken_venv = self.work / 'venv-broken'
        self.broken_py = pip_venv(lay, self.broken_venv, wheel, self.distro,
                                  broken=True)
        self.nova = self._client(facts['compute'])
        self.broken_api: Optional[rest_checks.Nova] = None
        self.servers: List[str] = []

    def _client(self, base: str) -> rest_checks.Nova:
        nova = rest_checks.Nova(base)
        if self.facts.get('keystone'):
            # authtoken drops the identity headers and trusts the token
            nova.http.headers['X-Auth-Token'] = keystone.admin_token(
                self.lay)
        return nova

    def log(self, msg: str) -> None:
        self.out.write('     %s\n' % msg)
        self.out.flush()

    # -- helpers ---------------------------------------------------------

    def _where(self, python: str) -> Dict[str, str]:
        out = subprocess.run([python, '-c', WHERE_CODE], capture_output=True,
                             text=True, timeout=120, cwd=str(self.work),
                             env=self.lay.env())
        expect(out.returncode == 0, '%s cannot import Nova' % python,
               out.stderr[-2000:])
        line = [ln for ln in out.stdout.splitlines()
                if ln.startswith(WHERE_MARK)][-1]
        return dict(kv.split('=', 1) for kv in line.split()[1:])

    def _service(self, binary: str, host: str) -> Dict[str, Any]:
        svcs = self.nova.request(
            'GET', '/os-services?binary=%s&host=%s' % (binary, host)
        ).json()['services']
        expect(len(svcs) == 1, 'one %s service on %s' % (binary, host),
               svcs)
        return svcs[0]

    def _wait_reported(self, binary: str, host: str, since:
                       datetime.datetime, name: str) -> None:
        """The service record's heartbeat moves past *since* (a process
        started after it reports) and the service is up."""
        def reported() -> bool:
            svc = self._service(binary, host)
            at = _utc(svc.get('updated_at'))
            return bool(at and at > since and svc['state'] == 'up')
        procs.wait_for('%s on %s to report (service up)' % (binary, host),
                       reported, START_TIMEOUT,
                       lambda: procs.first_dead(self.lay, [name]),
                       interval=1.0)

    def _start(self, name: str, python: str, module: str,
               conf: Path) -> datetime.datetime:
        since = _now_utc()
        code = WHERE_CODE + ('from %s import main; sys.exit(main())'
                             % module)
        # argv[0] names the service (oslo.config's prog, the logs)
        procs.start(self.lay, name, [
            python, '-c', code, '--config-file', str(conf),
            '--log-file', str(self.lay.log(name))])
        return since

    def _where_printed(self, name: str) -> Dict[str, str]:
        out = self.lay.logs / ('%s.out' % name)
        procs.wait_for('%s to print where it imports from' % name,
                       lambda: WHERE_MARK in out.read_text(errors='replace'),
                       60, lambda: procs.first_dead(self.lay, [name]))
        line = [ln for ln in out.read_text(errors='replace').splitlines()
                if ln.startswith(WHERE_MARK)][-1]
        return dict(kv.split('=', 1) for kv in line.split()[1:])

    def _output(self, name: str) -> str:
        """What *name* wrote: its log file and its stdout/stderr."""
        return ''.join(p.read_text(errors='replace') for p in (
            self.lay.log(name), self.lay.logs / ('%s.out' % name))
            if p.exists())

    def _log_has(self, name: str, text: str) -> bool:
        return text in self._output(name)

    def _guest_runs_on(self, sid: str, host: str) -> None:
        reader = xapi.XAPIReader(self.facts['xapi_url'],
                                 self.facts['xapi_username'],
                                 self.facts['xapi_password'])
        try:
            vms = reader.vms_of(sid)
            expect('guest' in vms, 'no guest VM of %s in XAPI' % sid, vms)
            guest = vms['guest'][1]
            where = reader.host_by_name(self.facts['xapi_hosts'][host])
            expect(guest['power_state'] == 'Running' and
                   guest['resident_on'] == where,
                   'the guest of %s is not running on %s' % (sid, host),
                   guest['power_state'], guest['resident_on'], where)
        finally:
            reader.close()

    def _restore(self, name: str, binary: str, host: str,
                 start: Callable[[], None]) -> None:
        since = _now_utc()
        start()
        self._wait_reported(binary, host, since, name)

    def _restore_conductor(self) -> None:
        self._restore('nova-conductor', 'nova-conductor', 'controller',
                      lambda: procs.start(self.lay, 'nova-conductor',
                                          services.nova_cmd(
                                              self.lay, 'nova-conductor',
                                              'nova-conductor')))

    def _restore_compute(self) -> None:
        conf = str(self.lay.etc / 'nova' / ('compute-%s.conf'
                                            % SWAPPED_HOST))
        self._restore(COMPUTE, 'nova-compute', SWAPPED_HOST,
                      lambda: procs.start(self.lay, COMPUTE,
                                          services.nova_cmd(
                                              self.lay, 'nova-compute',
                                              COMPUTE, conf)))

    # -- the checks ------------------------------------------------------

    def check_split_sites_layout(self) -> None:
        """Nova from the distribution's site, the shim from pip's: the
        shim resolves (through the start-up hook) -- and without the hook
        it would not."""
        where = self._where(self.split_py)
        self.log('nova.virt from %s; shim %s' % (where['nova.virt'],
                                                 where['shim']))
        expect(where['nova.virt'].startswith(str(self.distro)),
               'nova.virt not from the distribution site', where)
        site = str(_purelib(self.split_py))
        expect(where['shim'].startswith(site),
               'shim not from the pip site %s' % site, where)
        hook_pth = Path(site) / 'nova_xen_stubdom-objects.pth'
        expect(hook_pth.is_file(), 'pip did not install %s' % hook_pth)
        # the layout really is split: without the hook, no shim
        plain = subprocess.run(
            [self.split_py, '-c', 'import sys; sys.meta_path[:] = [f for f '
             'in sys.meta_path if type(f).__module__ != '
             '"nova_xen_stubdom.objects.hook"]; import nova.virt.'
             'xen_stubdom'], capture_output=True, text=True, timeout=120,
            cwd=str(self.work), env=self.lay.env())
        expect(plain.returncode != 0 and 'ModuleNotFoundError' in
               plain.stderr, 'the shim resolves without the hook: the '
               'layout is not split', plain.stderr[-500:])

    def check_compute_from_split_sites(self) -> None:
        """host1's nova-compute restarted from the split layout loads the
        driver through the shim, reports its resources and registers."""
        for line in procs.stop_many(self.lay, [COMPUTE], timeout=60):
            self.log(line)
        name = COMPUTE + '-split'
        conf = self.lay.etc / 'nova' / ('compute-%s.conf' % SWAPPED_HOST)
        try:
            since = self._start(name, self.split_py, 'nova.cmd.compute',
                                conf)
            where = self._where_printed(name)
            expect(where['shim'].startswith(str(self.work / 'venv-split')),
                   'the split compute found no shim in pip\'s site', where)
            self._wait_reported('nova-compute', SWAPPED_HOST, since, name)
            procs.wait_for(
                'the split compute\'s resource tracker',
                lambda: self._log_has(name, 'Compute_service record '
                                            'updated for %s' % SWAPPED_HOST),
                START_TIMEOUT, lambda: procs.first_dead(self.lay, [name]))
            expect(self._log_has(name, "Loading compute driver "
                                       "'xen_stubdom.XenStubdomDriver'"),
                   'no "Loading compute driver" line in %s'
                   % self.lay.log(name))
            hyps = self.nova.request(
                'GET', '/os-hypervisors/detail').json()['hypervisors']
            mine = [h for h in hyps
                    if h['service']['host'] == SWAPPED_HOST]
            expect(len(mine) == 1 and mine[0]['state'] == 'up' and
                   mine[0]['status'] == 'enabled',
                   'host1\'s hypervisor not up', mine)
            self.log('%s: driver loaded through %s; service up, '
                     'hypervisor %s up' % (name, where['shim'],
                                           mine[0]['hypervisor_hostname']))
        finally:
            for line in procs.stop_many(self.lay, [name], timeout=60):
                self.log(line)
            self._restore_compute()
            self.log('%s restarted from the cloud\'s venv' % COMPUTE)

    def check_nova_api_with_broken_package(self) -> None:
        """An extra nova-api whose import of this package raises serves
        the compute API; the xen_stubdom: extra specs go unvalidated, and
        a warning says why."""
        name = 'nova-api-broken'
        procs.start(self.lay, name, services.uwsgi(
            self.lay, name, BROKEN_API_PORT,
            'nova.wsgi.osapi_compute:application', str(self.broken_venv),
            ['OS_NOVA_CONFIG_DIR=%s' % (self.lay.etc / 'nova')]))
        url = 'http://%s:%d' % (L.HOST, BROKEN_API_PORT)
        procs.wait_for(name, lambda: procs.http_answers(url), START_TIMEOUT,
                       lambda: procs.first_dead(self.lay, [name]))
        api = self._client(url + '/v2.1')
        self.broken_api = api
        api.request('GET', '/servers/detail')
        api.request('GET', '/os-migrations')
        api.request('GET', '/os-hypervisors/detail')
        api.request('GET', '/flavors/detail')
        expect(self._log_has(name, 'flavor extra specs are not validated: '
                             'the driver does not import (ImportError: '
                             'simulated'),
               'no warning about the failed import from %s' % name)
        # the validators are absent: a bad value is stored unchecked (what
        # install.rst promises), and the API stays up
        fid = api.request('POST', '/flavors', {'flavor': {
            'name': 'install-check-%d' % (time.time() * 1000), 'ram': 512,
            'vcpus': 1, 'disk': 1}}).json()['flavor']['id']
        try:
            api.request('POST', '/flavors/%s/os-extra_specs' % fid,
                        {'extra_specs': {'xen_stubdom:memory_mb': 'lots'}})
        finally:
            api.request('DELETE', '/flavors/%s' % fid, ok=(202, 404))
        self.log('%s: servers, migrations, hypervisors, flavors served; '
                 'extra specs unvalidated, with the warning' % name)

    def check_conductor_with_broken_package(self) -> None:
        """The conductor whose import of our migrate_data raises builds,
        shows and deletes a server; a live migration, whose migrate_data
        it cannot deserialise, fails naming the class (Nova sets the
        instance to ERROR) and the guest keeps running where it was."""
        expect(self.broken_api is not None, 'needs the broken nova-api '
               '(check_nova_api_with_broken_package)')
        api = self.broken_api
        for line in procs.stop_many(self.lay, ['nova-conductor'],
                                    timeout=60):
            self.log(line)
        name = 'nova-conductor-broken'
        try:
            since = self._start(name, self.broken_py, 'nova.cmd.conductor',
                                self.lay.etc / 'nova' / 'nova.conf')
            self._wait_reported('nova-conductor', 'controller', since, name)
            expect(self._log_has(name, 'nova_xen_stubdom.objects.migrate_'
                                 'data could not be imported (ImportError: '
                                 'simulated'),
                   'no warning about the failed import from %s' % name)
            sid = api.request('POST', '/servers', {'server': {
                'name': 'install-check', 'imageRef': self.facts['image_id'],
                'flavorRef': self.facts['flavors']['tempest.small'],
                'networks': 'none'}}).json()['server']['id']
            self.servers.append(sid)
            server = api.wait_status(sid, 'ACTIVE')
            host = server['OS-EXT-SRV-ATTR:host']
            self.log('server %s ACTIVE on %s (built through %s)'
                     % (sid, host, name))
            api.request('POST', '/servers/%s/action' % sid, {
                'os-migrateLive': {'host': None,
                                   'block_migration': 'auto'}})

            def migration_ended() -> bool:
                migs = api.request('GET', '/os-migrations?instance_uuid=%s'
                                   % sid).json()['migrations']
                return bool(migs) and migs[-1]['status'] in (
                    'error', 'failed', 'completed')
            procs.wait_for('the live migration of %s to end' % sid,
                           migration_ended, START_TIMEOUT,
                           lambda: procs.first_dead(self.lay, [name]))
            migs = api.request('GET', '/os-migrations?instance_uuid=%s'
                               % sid).json()['migrations']
            expect(migs[-1]['status'] in ('error', 'failed'),
                   'the live migration did not fail without our '
                   'migrate_data in the conductor', migs[-1])
            # An error the conductor does not expect: Nova's conductor
            # (manager._live_migrate) puts the instance in ERROR, with the
            # reason as its fault; the guest itself never moved.
            server = api.wait(sid, lambda s: not s.get(
                'OS-EXT-STS:task_state'), 'the migration\'s task to end',
                accept_error=True)
            fault = (server.get('fault') or {}).get('message', '')
            expect(server['status'] == 'ERROR' and
                   'XenStubdomLiveMigrateData' in fault,
                   'no ERROR naming the class the conductor could not '
                   'deserialise', server['status'], fault)
            expect(server['OS-EXT-SRV-ATTR:host'] == host,
                   'the server moved', server['OS-EXT-SRV-ATTR:host'])
            self._guest_runs_on(sid, host)
            self.log('live migration: %s, server ERROR with fault %r; its '
                     'guest still runs on %s' % (migs[-1]['status'], fault,
                                                 host))
            # what the operator does once the package is fixed
            api.request('POST', '/servers/%s/action' % sid,
                        {'os-resetState': {'state': 'active'}})
            api.wait_status(sid, 'ACTIVE')
            api.request('DELETE', '/servers/' + sid, ok=(204,))
            api.wait_gone(sid)
            self.servers.remove(sid)
            expect(procs.first_dead(self.lay, [name]) is None,
                   '%s died' % name)
        finally:
            for line in procs.stop_many(self.lay, [name], timeout=60):
                self.log(line)
            self._restore_conductor()
            self.log('nova-conductor restarted from the cloud\'s venv')
            # only now: a request racing the swap can be lost with the
            # stopping conductor
            for sid in list(self.servers):
                self.nova.request('DELETE', '/servers/' + sid,
                                  ok=(204, 404))
                self.nova.wait_gone(sid)
                self.servers.remove(sid)

    def close(self) -> None:
        for line in procs.stop_many(self.lay, ['nova-api-broken'],
                                    timeout=30):
            self.log(line)

    @staticmethod
    def names() -> List[str]:
        return ['check_split_sites_layout', 'check_compute_from_split_sites',
                'check_nova_api_with_broken_package',
                'check_conductor_with_broken_package']


def _wheel(lay: L.Layout, wheel: str) -> Path:
    if wheel:
        return Path(wheel)
    found = sorted((lay.root / 'wheels').glob('nova_xen_stubdom-*.whl'))
    if not found:
        raise procs.CloudError('no wheel of this project in %s (built by '
                               'tools/cloud/make-venvs.sh); pass --wheel'
                               % (lay.root / 'wheels'))
    return found[-1]


def main(lay: L.Layout, wheel: str, only: str, out: TextIO) -> int:
    if not lay.state_file.exists():
        out.write('install-checks: the cloud is not up (no %s)\n'
                  % lay.state_file)
        return 1
    facts = json.loads(lay.state_file.read_text())
    if not facts.get('xapi_url'):
        out.write('install-checks: the cloud does not run the xen_stubdom '
                  'driver\n')
        return 1
    t0 = time.monotonic()
    checks = Checks(lay, facts, _wheel(lay, wheel), out)
    out.write('install-checks: layouts built under %s (%.1f s)\n'
              % (checks.work, time.monotonic() - t0))
    passed = failed = 0
    try:
        for name in checks.names():
            if only and only not in name:
                continue
            t = time.monotonic()
            try:
                getattr(checks, name)()
            except Exception as e:  # noqa: B902 - any error fails the check
                failed += 1
                out.write('FAIL %s (%.1f s): %s\n' % (
                    name[6:], time.monotonic() - t, e))
                if not isinstance(e, CheckFailed):
                    out.write(traceback.format_exc())
            else:
                passed += 1
                out.write('ok   %s (%.1f s)\n' % (name[6:],
                                                  time.monotonic() - t))
            out.flush()
    finally:
        checks.close()
    out.write('install-checks: %d passed, %d failed\n' % (passed, failed))
    return 1 if failed or not passed else 0
