"""XenBackend's ctypes prototypes and struct mirrors vs Xen's C headers.

Generates a C file that assigns every bound library function to a function
pointer of the type the backend's ctypes prototype describes, and
static-asserts the size and every field offset of each struct mirror, then
compiles it with ``-Werror``: any arity, integer width, signedness or
layout difference from the installed headers fails the build.  Runs where
the Xen headers are installed (``libxen-dev``, see tools/apt-packages.txt)
or where ``NXS_XEN_INCLUDE`` names include directories (colon-separated);
skipped otherwise.

Opaque pointer arguments (``c_void_p`` on the ctypes side) are declared with
the header's pointer type from :data:`POINTER_TYPES`; pointers are all the
same to the ABI, so this only keeps the compiler's pointer-type check quiet
-- integers are never overridden, except where ctypes cannot name the C
type (``long long``, an alias of ``long`` in ctypes on LP64).
"""
import ctypes
import os
import shutil
import subprocess

import pytest

from nova_xen_stubdom.dom0 import xen_libs as xl

STRUCTS = {
    xl.XcDomainInfo: 'xc_domaininfo_t',
    xl.XenArchDomainConfig: 'struct xen_arch_domainconfig',
    xl.XcHypercallBuffer: 'xc_hypercall_buffer_t',
    xl.XcShadowOpStats: 'xc_shadow_op_stats_t',
    xl.XsPermissions: 'struct xs_permissions',
}
SCALARS = [
    (ctypes.c_bool, 'bool'), (ctypes.c_uint8, 'uint8_t'),
    (ctypes.c_uint16, 'uint16_t'), (ctypes.c_int, 'int'),
    (ctypes.c_uint, 'unsigned int'), (ctypes.c_long, 'long'),
    (ctypes.c_ulong, 'unsigned long'), (ctypes.c_char_p, 'const char *'),
    (ctypes.c_void_p, 'void *'),
]
#: (symbol, argument index or -1 for the result) -> C type
POINTER_TYPES = {
    ('xc_interface_open', -1): 'xc_interface *',
    ('xc_cpu_policy_init', -1): 'xc_cpu_policy_t *',
    ('xc_cpu_policy_destroy', 0): 'xc_cpu_policy_t *',
    ('xc_cpu_policy_get_domain', 2): 'xc_cpu_policy_t *',
    ('xc_cpu_policy_get_system', 2): 'xc_cpu_policy_t *',
    ('xc_cpu_policy_serialise', 1): 'const xc_cpu_policy_t *',
    ('xc_cpu_policy_serialise', 2): 'xen_cpuid_leaf_t *',
    ('xc_cpu_policy_serialise', 4): 'xen_msr_entry_t *',
    ('xc_set_domain_cpu_policy', 3): 'xen_cpuid_leaf_t *',
    ('xc_set_domain_cpu_policy', 5): 'xen_msr_entry_t *',
    ('xc_interface_open', 0): 'xentoollog_logger *',
    ('xc_interface_open', 1): 'xentoollog_logger *',
    ('xc_domain_hvm_getcontext', 2): 'uint8_t *',
    ('xc_domain_hvm_setcontext', 2): 'uint8_t *',
    ('xenforeignmemory_open', -1): 'xenforeignmemory_handle *',
    ('xenforeignmemory_open', 0): 'xentoollog_logger *',
    ('xs_open', -1): 'struct xs_handle *',
    ('xs_write', 3): 'const void *',
    ('xs_directory', -1): 'char **',
    ('xs_get_permissions', -1): 'struct xs_permissions *',
}
#: ctypes has no distinct long long on LP64
INTEGER_OVERRIDES = {('xc_logdirty_control', -1): 'long long'}
CONST_ARRAYS = {('xenforeignmemory_map2', 6)}


def _handle_type(sym):
    if sym.startswith('xc_'):
        return 'xc_interface *'
    if sym.startswith('xenforeignmemory_'):
        return 'xenforeignmemory_handle *'
    if sym.startswith('xs_'):
        return 'struct xs_handle *'
    return None


def _c_type(t):
    if t is None:
        return 'void'
    for ct, name in SCALARS:
        if t is ct:
            return name
    if t in STRUCTS:
        return STRUCTS[t]
    if issubclass(t, ctypes._Pointer):
        return _c_type(t._type_) + ' *'
    raise AssertionError('no C name for %r' % t)


def _decl(sym, idx, t):
    key = (sym, idx)
    if key in INTEGER_OVERRIDES:
        return INTEGER_OVERRIDES[key]
    if t in (ctypes.c_void_p, ctypes.c_char_p):
        if key in POINTER_TYPES:
            return POINTER_TYPES[key]
        if idx == 0 and _handle_type(sym) and not sym.endswith('_open'):
            return _handle_type(sym)
    elif key in POINTER_TYPES:
        raise AssertionError('%r: pointer override on a non-pointer'
                             % (key,))
    name = _c_type(t)
    if key in CONST_ARRAYS:
        name = 'const ' + name
    return name


def generate_c() -> str:
    lines = ['#include <stdbool.h>', '#include <stddef.h>',
             '#include <stdint.h>', '#include <stdlib.h>',
             '#include <sys/mman.h>', '#include <xenctrl.h>',
             '#include <xenforeignmemory.h>', '#include <xenstore.h>',
             '#include <xenguest.h>', '']
    # exported by libxenctrl but declared only in Xen's private
    # tools/libs/ctrl/xc_private.h (4.17), transcribed here
    lines += ['int xc_get_pfn_type_batch(xc_interface *xch, uint32_t dom,'
              ' unsigned int num, xen_pfn_t *);', '']
    for cls, cname in STRUCTS.items():
        lines.append('_Static_assert(sizeof(%s) == %d, "sizeof %s");'
                     % (cname, ctypes.sizeof(cls), cname))
        for field, *_ in cls._fields_:
            lines.append('_Static_assert(offsetof(%s, %s) == %d, '
                         '"%s.%s");' % (cname, field,
                                        getattr(cls, field).offset, cname,
                                        field))
    for group in xl.PROTOTYPES.values():
        for sym, (restype, argtypes) in group.items():
            args = ', '.join(_decl(sym, i, t)
                             for i, t in enumerate(argtypes)) or 'void'
            lines.append('%s (*check_%s)(%s) = %s;'
                         % (_decl(sym, -1, restype), sym, args, sym))
    return '\n'.join(lines) + '\n'


def _include_dirs():
    env = os.environ.get('NXS_XEN_INCLUDE')
    if env:
        return env.split(':')
    if os.path.exists('/usr/include/xenctrl.h'):
        return ['/usr/include']
    return None


def test_generated_check_covers_every_symbol():
    src = generate_c()
    for group in xl.PROTOTYPES.values():
        for sym in group:
            assert '= %s;' % sym in src
    assert 'long long (*check_xc_logdirty_control)(xc_interface *, ' \
        'unsigned int, unsigned int, xc_hypercall_buffer_t *, ' \
        'unsigned long, unsigned int, xc_shadow_op_stats_t *)' in src


@pytest.mark.skipif(_include_dirs() is None,
                    reason='Xen headers not installed (libxen-dev)')
@pytest.mark.skipif(not (shutil.which('cc') or shutil.which('gcc')),
                    reason='no C compiler')
def test_prototypes_and_structs_match_xen_headers(tmp_path):
    src = tmp_path / 'check.c'
    src.write_text(generate_c())
    cc = shutil.which('cc') or shutil.which('gcc')
    cmd = [cc, '-std=gnu11', '-fsyntax-only', '-Werror', '-Wall',
           '-Wno-unused-variable', '-Wincompatible-pointer-types']
    cmd += ['-I%s' % d for d in _include_dirs()] + [str(src)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
