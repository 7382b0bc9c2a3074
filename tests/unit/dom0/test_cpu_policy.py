"""CPU policies in libxc's serialised form and the destination check."""
import struct

import pytest

from nova_xen_stubdom.dom0 import cpu_policy as cp

BASE = ['fpu', 'tsc', 'sse2', 'sse4_2', 'avx', 'lm', 'nx']


def test_serialise_is_xen_layout_and_round_trips():
    pol = cp.build('GenuineIntel', BASE + ['avx2', 'avx512f'])
    cpuid, msrs = pol.serialise()
    assert len(cpuid) % 24 == 0 and len(msrs) == 16
    leaf0 = struct.unpack_from('<IIIIII', cpuid, 0)
    assert leaf0[:2] == (0, cp.NO_SUBLEAF)
    assert struct.pack('<III', leaf0[3], leaf0[5], leaf0[4]) == \
        b'GenuineIntel'
    back = cp.CpuPolicy.parse(cpuid, msrs)
    assert back.serialise() == (cpuid, msrs)
    assert back.vendor == 'GenuineIntel'
    assert set(BASE + ['avx2', 'avx512f']) == set(back.features())


def test_feature_bits_follow_cpufeatureset_h():
    # cpufeatureset.h: AVX2 is 5*32+5 (leaf 7 ebx bit 5), SSE4_2 1*32+20
    # (leaf 1 ecx bit 20), LM 2*32+29 (0x80000001 edx bit 29)
    assert cp.FEATURES['avx2'] == (7, 0, 1, 5)
    assert cp.FEATURES['sse4_2'] == (1, cp.NO_SUBLEAF, 2, 20)
    assert cp.FEATURES['lm'] == (0x80000001, cp.NO_SUBLEAF, 3, 29)
    assert cp.FEATURES['fpu'] == (1, cp.NO_SUBLEAF, 3, 0)


@pytest.mark.parametrize('cpuid,msrs,msg', [
    (b'\0' * 23, b'', 'not a multiple of 24'),
    (b'', b'\0' * 17, 'not a multiple of 16'),
    (b'\0' * 48, b'', 'appears twice'),
    (b'', struct.pack('<IIQ', 0xce, 1, 0), 'non-zero flags'),
    (b'\0' * 24 * (cp.MAX_LEAVES + 1), b'', 'more than'),
])
def test_malformed_policy_is_refused(cpuid, msrs, msg):
    with pytest.raises(cp.PolicyError, match=msg):
        cp.CpuPolicy.parse(cpuid, msrs)


def test_same_or_larger_host_is_compatible():
    guest = cp.build('GenuineIntel', BASE)
    assert cp.incompatibilities(guest, guest) == []
    assert cp.incompatibilities(
        guest, cp.build('GenuineIntel', BASE + ['avx2'])) == []


def test_missing_features_are_named():
    guest = cp.build('GenuineIntel', BASE + ['avx2', 'avx512f', 'avx512bw'])
    host = cp.build('GenuineIntel', BASE + ['avx2'])
    assert cp.incompatibilities(guest, host) == [
        'features avx512bw avx512f']


def test_xen_audits_max_leaves_platform_info_and_vendor():
    # x86_cpu_policies_are_compatible: max leaves and PLATFORM_INFO
    guest = cp.build('GenuineIntel', BASE, max_leaf=0x1f,
                     max_extd_leaf=0x80000021, platform_info=1 << 32)
    host = cp.build('AuthenticAMD', BASE)
    why = cp.incompatibilities(guest, host)
    assert why[0] == 'CPU vendor GenuineIntel (the host has AuthenticAMD)'
    assert 'max basic leaf 0x1f (the host offers 0xd)' in why
    assert 'max extended leaf 0x80000021 (the host offers 0x80000008)' \
        in why
    assert 'MSR_INTEL_PLATFORM_INFO bits 0x100000000' in why


def test_build_refuses_unknown_names():
    with pytest.raises(ValueError, match='unknown CPU feature'):
        cp.build('GenuineIntel', ['warp_drive'])
    with pytest.raises(ValueError, match='12 characters'):
        cp.build('Intel', [])


def test_entry_layouts_are_the_streams():
    emucore = pytest.importorskip('nova_xen_stubdom.emucore',
                                  reason='the _emucore extension is not '
                                         'built here')
    assert cp.LEAF_FORMAT == emucore.format.X86_CPUID_POLICY_ENTRY_FORMAT
    assert cp.MSR_FORMAT == emucore.format.X86_MSR_POLICY_ENTRY_FORMAT
