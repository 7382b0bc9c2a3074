"""The host-side steps of installing and removing the dom0 package.

One implementation for both installers: the tarball's ``install.sh`` and
the RPM's ``%post``/``%preun`` run ``/usr/libexec/nova-xen-stubdom/dom0-setup
install|uninstall`` (a launcher of this module).  The root it acts on is
the one the launcher is installed in (``/`` on a host, a scratch root in
tests), so nothing outside that tree is touched.

``install``
    registers the device-model wrapper in ``/etc/xenopsd.conf``
    (:mod:`xenopsd_conf`), writes the wrapper it replaces into
    ``agent.conf`` as ``[agent] stock_dm_wrapper`` (the wrapper execs it,
    argv unchanged, for VMs it does not manage), keeps what it changed in
    ``/var/lib/nova-xen-stubdom/install/registration.json`` and enables
    the daemon's unit; then says that xenopsd must be restarted.
    Idempotent: a second run (an RPM upgrade) changes nothing.
``uninstall``
    puts both files back -- byte for byte when nobody changed them since,
    else only our line is undone -- and disables the unit.
``status``
    prints what is registered.

Standard library only (dom0's Python 3.6).
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
from typing import Dict, List, Optional, Sequence

from nova_xen_stubdom.dom0 import constants
from nova_xen_stubdom.dom0 import xenopsd_conf

WRAPPER = '/usr/libexec/nova-xen-stubdom/dm-wrapper'
SERVICE = 'nova-xen-stubdom-agent.service'
UNIT_FILE = '/usr/lib/systemd/system/' + SERVICE
WANTS_LINK = '/etc/systemd/system/multi-user.target.wants/' + SERVICE
RECORD = constants.STATE_DIR + '/install/registration.json'
AGENT_KEY = 'stock_dm_wrapper'


def _host(root: str, path: str) -> str:
    return os.path.join(root, path.lstrip('/'))


def _read(path: str) -> Optional[str]:
    # latin-1 maps every byte to one character: a byte-exact round trip
    try:
        with open(path, encoding='latin-1', newline='') as f:
            return f.read()
    except FileNotFoundError:
        return None


def _write(path: str, text: str, like: Optional[str] = None) -> None:
    """Replace *path* atomically, keeping the mode and owner of *like*."""
    tmp = path + '.nxs-new'
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        with open(tmp, 'w', encoding='latin-1', newline='') as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        ref = like or path
        if os.path.exists(ref):
            st = os.stat(ref)
            os.chmod(tmp, st.st_mode & 0o7777)
            try:
                os.chown(tmp, st.st_uid, st.st_gid)
            except PermissionError:
                pass
        os.rename(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode('latin-1')).hexdigest()


def set_agent_key(text: str, value: str) -> str:
    """agent.conf *text* with ``[agent] stock_dm_wrapper = value``."""
    line = '%s = %s\n' % (AGENT_KEY, value)
    lines = text.splitlines(True)
    section = None
    header = None
    for i, ln in enumerate(lines):
        s = ln.strip()
        if s.startswith('[') and s.endswith(']'):
            section = s[1:-1].strip()
            if section == 'agent':
                header = i
        elif section == 'agent' and s.split('=', 1)[0].strip() == AGENT_KEY:
            lines[i] = line
            return ''.join(lines)
    if lines and not lines[-1].endswith('\n'):
        lines[-1] += '\n'
    if header is None:
        return ''.join(lines) + '[agent]\n' + line
    lines.insert(header + 1, line)
    return ''.join(lines)


def _restore(path: str, saved: Dict[str, Optional[str]],
             undo_line: Optional[str], say: List[str]) -> None:
    """Put *path* back as the record says; *undo_line*: the text with
    only our edit undone, for a file changed since."""
    now = _read(path)
    if now is None:
        return
    if _sha(now) == saved['written_sha256']:
        if saved['original'] is None:
            os.unlink(path)
        else:
            _write(path, saved['original'])
    elif undo_line is not None:
        _write(path, undo_line)
        say.append('%s changed since the install: only our line was undone'
                   % path)
    else:
        say.append('%s changed since the install and no longer has our '
                   'line: left as it is' % path)


def _systemd(root: str, enable: bool, say: List[str]) -> None:
    if root != '/':
        # a scratch root: what `systemctl enable` makes for WantedBy=
        link = _host(root, WANTS_LINK)
        if enable:
            os.makedirs(os.path.dirname(link), exist_ok=True)
            if not os.path.lexists(link):
                os.symlink(UNIT_FILE, link)
        elif os.path.lexists(link):
            os.unlink(link)
        return
    if not os.path.isdir('/run/systemd/system'):
        say.append('systemd is not running: enable %s yourself' % SERVICE)
        return
    cmds = ([['systemctl', 'daemon-reload'],
             ['systemctl', 'enable', '--now', SERVICE]] if enable else
            [['systemctl', 'disable', '--now', SERVICE]])
    for cmd in cmds:
        if subprocess.call(cmd) != 0:
            say.append('%s failed' % ' '.join(cmd))


def install(root: str) -> List[str]:
    """Register the wrapper and enable the daemon; the messages."""
    say = []    # type: List[str]
    conf_path = _host(root, xenopsd_conf.CONF)
    agent_path = _host(root, constants.AGENT_CONF)
    record_path = _host(root, RECORD)
    conf = _read(conf_path)
    if os.path.exists(record_path):
        say.append('the wrapper is already registered in %s'
                   % xenopsd_conf.CONF)
    elif conf is None:
        say.append('no %s: not an XCP-ng dom0? the device-model wrapper is '
                   'NOT registered' % xenopsd_conf.CONF)
    else:
        frags = xenopsd_conf.overriding_fragments(root)
        if frags:
            raise xenopsd_conf.ConfError(
                '%s set in %s, which xenopsd reads after %s: remove it '
                'there first' % (xenopsd_conf.KEY, ', '.join(frags),
                                 xenopsd_conf.CONF))
        new_conf, edit = xenopsd_conf.register(conf, WRAPPER, root)
        agent = _read(agent_path)
        new_agent = set_agent_key(agent or '', edit['stock'])
        record = {
            'xenopsd_conf': {'original': conf,
                             'written_sha256': _sha(new_conf), 'edit': edit},
            'agent_conf': {'original': agent,
                           'written_sha256': _sha(new_agent)},
        }
        os.makedirs(os.path.dirname(record_path), mode=0o700, exist_ok=True)
        # the record first: whatever happens next, uninstall can undo it
        _write(record_path, json.dumps(record, indent=1, sort_keys=True))
        try:
            _write(conf_path, new_conf)
            _write(agent_path, new_agent)
        except BaseException:
            _write(conf_path, conf)
            if agent is None:
                if os.path.exists(agent_path):
                    os.unlink(agent_path)
            else:
                _write(agent_path, agent)
            os.unlink(record_path)
            raise
        say.append('%s: %s=%s (was %s; VMs we do not manage keep %s)' % (
            xenopsd_conf.CONF, xenopsd_conf.KEY, WRAPPER,
            edit['previous'] or 'unset', edit['stock']))
        say.append('restart xenopsd to use it: %s' % xenopsd_conf.RESTART)
    _systemd(root, True, say)
    return say


def uninstall(root: str) -> List[str]:
    """Undo :func:`install`; the messages."""
    say = []    # type: List[str]
    _systemd(root, False, say)
    record_path = _host(root, RECORD)
    text = _read(record_path)
    if text is None:
        say.append('no registration recorded: %s left as it is'
                   % xenopsd_conf.CONF)
        return say
    record = json.loads(text)
    conf_path = _host(root, xenopsd_conf.CONF)
    now = _read(conf_path)
    undone = None if now is None else xenopsd_conf.unregister(
        now, record['xenopsd_conf']['edit'])
    _restore(conf_path, record['xenopsd_conf'], undone, say)
    agent_path = _host(root, constants.AGENT_CONF)
    _restore(agent_path, record['agent_conf'], None, say)
    os.unlink(record_path)
    try:
        os.rmdir(os.path.dirname(record_path))
    except OSError:
        pass
    say.append('%s restored; restart xenopsd: %s'
               % (xenopsd_conf.CONF, xenopsd_conf.RESTART))
    return say


def status(root: str) -> List[str]:
    conf = _read(_host(root, xenopsd_conf.CONF)) or ''
    found = xenopsd_conf.settings(conf, xenopsd_conf.KEY)
    value = found[-1][1] if found else None
    return ['%s: %s = %s%s' % (
        xenopsd_conf.CONF, xenopsd_conf.KEY, value or
        '(unset: %s)' % xenopsd_conf.DEFAULT,
        ' (ours)' if value == WRAPPER else ''),
        'recorded: %s' % os.path.exists(_host(root, RECORD))]


def root_of(launcher: str) -> str:
    """The root a launcher at ``<root>/usr/libexec/nova-xen-stubdom/`` is
    installed in."""
    here = os.path.dirname(os.path.realpath(launcher))
    return os.path.realpath(os.path.join(here, '..', '..', '..'))


def main(argv: Optional[Sequence[str]] = None,
         launcher: Optional[str] = None) -> int:
    p = argparse.ArgumentParser(prog='dom0-setup', description=__doc__.split(
        '\n\n')[0])
    p.add_argument('action', choices=('install', 'uninstall', 'status'))
    p.add_argument('--root', help='default: the root this launcher is '
                   'installed in')
    opts = p.parse_args(argv)
    root = opts.root or (root_of(launcher) if launcher else '/')
    try:
        lines = {'install': install, 'uninstall': uninstall,
                 'status': status}[opts.action](root)
    except (xenopsd_conf.ConfError, OSError, ValueError) as exc:
        # install undoes its own partial work; uninstall stops where it is
        sys.stderr.write('nova-xen-stubdom dom0-setup %s failed: %s%s\n' % (
            opts.action, exc,
            ' (nothing changed)' if opts.action == 'install' else ''))
        return 1
    for line in lines:
        print('nova-xen-stubdom: %s' % line)
    return 0


if __name__ == '__main__':
    sys.exit(main())
