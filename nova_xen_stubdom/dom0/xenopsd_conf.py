"""Reading and editing ``/etc/xenopsd.conf``: the host-wide device model.

xenopsd starts every HVM guest's device model through one executable, the
``upstream-compat-qemu-dm-wrapper`` resource (xen-api
``ocaml/xenopsd/lib/resources.ml``: ``upstream_compat_qemu_dm_wrapper``,
default ``"qemu-wrapper"``, listed in ``hvm_guests``;
``ocaml/xenopsd/xc/device.ml``: ``Profile.wrapper_of`` returns it for every
upstream QEMU profile).  The file is read once, at start
(``ocaml/xapi-idl/lib/xcp_service.ml``: ``configure_common`` ->
``read_config_file``), so a change needs ``systemctl restart xenopsd-xc``
(XCP-ng's unit, ``xenopsd-xc.service``: ``xenopsd-xc --config
/etc/xenopsd.conf``).

The syntax is ``xcp_service.ml``'s ``Config_file``: everything from the
first ``#`` is a comment, trailing blanks are dropped, the first
``KEY[ \\t]*=[ \\t]*VALUE`` found in the line (KEY without ``=``, blanks)
is the setting, and one pair of matching quotes around VALUE is removed.
Every line is applied in order, so the last one wins; ``search-path``
lines accumulate, the later ones searched first.  Then the files of the
config directory (``/etc/<argv0>.conf.d``, sorted) are applied, so a
fragment there overrides ``xenopsd.conf``.  A relative value is looked up
on ``$PATH`` and then the search path (``canonicalise``).  XCP-ng 8.3's
``xenopsd.conf`` does not set the key, and its ``qemu-wrapper`` is
``/usr/lib64/xen/bin/qemu-wrapper`` (``xapi.spec``:
``--qemu_wrapper_dir=%{_libdir}/xen/bin``; that directory is on the
search path).

Standard library only: run by the installer on dom0's Python 3.6.
"""
import os
import re
from typing import Dict, List, Optional, Tuple

KEY = 'upstream-compat-qemu-dm-wrapper'
#: xenopsd's built-in value when no line sets the key
DEFAULT = 'qemu-wrapper'
CONF = '/etc/xenopsd.conf'
#: xenopsd-xc's config directories: xcp_service.ml's default is
#: /etc/<basename argv0>.conf.d; the name without "-xc" is checked too
#: because xen-api's own docs use it (ocaml/ktls-helper/README.md)
CONF_DIRS = ('/etc/xenopsd-xc.conf.d', '/etc/xenopsd.conf.d')
UNIT = 'xenopsd-xc'
RESTART = 'systemctl restart %s' % UNIT
#: systemd's default PATH for services (xenopsd's $PATH)
SERVICE_PATH = ('/usr/local/sbin', '/usr/local/bin', '/usr/sbin',
                '/usr/bin', '/sbin', '/bin')
#: the comment line put above a line we add
MARK = ('# nova-xen-stubdom: device models go through its wrapper; '
        'uninstalling nova-xen-stubdom-dom0 restores this file')

_KV = re.compile(r'([^= \t]+)[ \t]*=[ \t]*(.*)')


class ConfError(Exception):
    """xenopsd.conf cannot take the registration; nothing was changed."""


def parse_line(line: str) -> Optional[Tuple[str, str]]:
    """``(key, value)`` of one line as xenopsd reads it, else None."""
    line = line.split('#', 1)[0].rstrip(' \t\r\n')
    m = _KV.search(line)
    if m is None:
        return None
    key, value = m.group(1), m.group(2)
    if len(value) >= 2 and value[0] == value[-1] and value[0] in '"\'':
        value = value[1:-1]
    return key, value


def settings(text: str, key: str) -> List[Tuple[int, str]]:
    """``(line index, value)`` of every line setting *key*, in order."""
    found = []
    for i, line in enumerate(text.splitlines()):
        kv = parse_line(line)
        if kv is not None and kv[0] == key:
            found.append((i, kv[1]))
    return found


def search_path(text: str) -> List[str]:
    """The directories of every ``search-path`` line, as xenopsd orders
    them (a later line's directories first)."""
    dirs = []      # type: List[str]
    for _, value in settings(text, 'search-path'):
        dirs = [d for d in value.split(':') if d] + dirs
    return dirs


def resolve(value: str, text: str, root: str = '/') -> Optional[str]:
    """The executable xenopsd runs for *value* (a host path), None when
    a relative name is found nowhere."""
    if os.path.isabs(value):
        return value
    for d in list(SERVICE_PATH) + search_path(text):
        path = os.path.join(d, value)
        if os.path.isfile(os.path.join(root, path.lstrip('/'))):
            return path
    return None


def overriding_fragments(root: str) -> List[str]:
    """Config-directory files that set :data:`KEY` (they win)."""
    found = []
    for d in CONF_DIRS:
        full = os.path.join(root, d.lstrip('/'))
        try:
            names = sorted(os.listdir(full))
        except OSError:
            continue
        for name in names:
            path = os.path.join(full, name)
            if not os.path.isfile(path):
                continue
            with open(path, encoding='latin-1') as f:
                if settings(f.read(), KEY):
                    found.append(os.path.join(d, name))
    return found


def register(text: str, wrapper: str,
             root: str = '/') -> Tuple[str, Dict[str, Optional[str]]]:
    """*text* with the device model set to *wrapper*, and the edit.

    The edit says what was there (``previous``: the raw value or None when
    no line set the key; ``stock``: the executable it names) and what was
    written (``line``, ``original_line``, ``added``), so that
    :func:`unregister` can undo it even after other edits of the file.
    """
    found = settings(text, KEY)
    raw = found[-1][1] if found else None
    if raw == wrapper:
        raise ConfError('%s already names %s as %s' % (CONF, wrapper, KEY))
    stock = resolve(raw if raw is not None else DEFAULT, text, root)
    if stock is None:
        raise ConfError(
            'cannot find the stock device-model wrapper %r on $PATH or '
            'xenopsd\'s search-path %s' % (raw or DEFAULT,
                                           ':'.join(search_path(text))))
    line = '%s=%s' % (KEY, wrapper)
    lines = text.splitlines(True)
    if found:
        # replace the winning line in place: the file keeps its order
        index = found[-1][0]
        original = lines[index]
        ending = original[len(original.rstrip('\r\n')):] or '\n'
        lines[index] = line + ending
        edit = {'added': None, 'original_line': original.rstrip('\r\n')}
    else:
        if lines and not lines[-1].endswith('\n'):
            lines[-1] += '\n'
        lines += [MARK + '\n', line + '\n']
        edit = {'added': MARK, 'original_line': None}
    edit.update(previous=raw, stock=stock, line=line)
    return ''.join(lines), edit


def unregister(text: str, edit: Dict[str, Optional[str]]) -> Optional[str]:
    """*text* without the edit :func:`register` described; None when the
    line written then is no longer there (the file was changed by hand)."""
    lines = text.splitlines(True)
    stripped = [ln.rstrip('\r\n') for ln in lines]
    ours = [i for i, ln in enumerate(stripped) if ln == edit['line']]
    if not ours:
        return None
    index = ours[-1]
    if edit.get('original_line') is not None:
        ending = lines[index][len(stripped[index]):]
        lines[index] = edit['original_line'] + ending
    else:
        del lines[index]
        if index > 0 and stripped[index - 1] == edit.get('added'):
            del lines[index - 1]
    return ''.join(lines)
