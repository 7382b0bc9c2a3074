"""build-dom0's RPM step without building: its version, and the reason
it gives when rpmbuild is missing (the tarball is still built then)."""
import os
import shutil

import pytest

from nova_xen_stubdom.cmd import build_dom0
from nova_xen_stubdom.cmd import dom0_rpm


def test_rpmbuild_missing_is_reported_not_built(monkeypatch, tmp_path):
    monkeypatch.setattr(shutil, 'which', lambda name: None)
    with pytest.raises(dom0_rpm.NotBuilt, match='rpmbuild not found'):
        dom0_rpm.build(str(tmp_path), str(tmp_path), 'abc', False,
                       str(tmp_path / 'work'))
    assert os.listdir(str(tmp_path)) == []


def test_build_all_keeps_the_tarball_without_rpmbuild(monkeypatch,
                                                      tmp_path):
    def fake_stage(files, python36, stubdom_dir, work):
        os.makedirs(os.path.join(files, 'etc'))
        open(os.path.join(files, 'etc', 'x'), 'w').close()

    monkeypatch.setattr(build_dom0, 'stage', fake_stage)
    monkeypatch.setattr(build_dom0, '_find_python36', lambda p: 'py36')
    monkeypatch.setattr(shutil, 'which', lambda name: None)
    result = build_dom0.build_all(str(tmp_path))
    assert os.path.isfile(result['tarball'])
    assert result['rpm'] == ''
    assert 'rpmbuild not found' in result['rpm_not_built']


@pytest.mark.parametrize('dist,describe,expected', [
    ('0.0.1.dev245', 'c0365ff-dirty', ('0.0.1', '0.dev245.gc0365ff.dirty')),
    ('1.2.0', '1.2.0', ('1.2.0', '0.g1.2.0')),
])
def test_rpm_version(monkeypatch, dist, describe, expected):
    from importlib import metadata
    monkeypatch.setattr(metadata, 'version', lambda name: dist)
    assert dom0_rpm.rpm_version(describe) == expected


def test_spec_scriptlets_call_the_shared_setup():
    with open(dom0_rpm.SPEC) as f:
        spec = f.read()
    post = spec.split('%post\n', 1)[1].split('%preun', 1)[0]
    preun = spec.split('%preun\n', 1)[1].split('%postun', 1)[0]
    assert '/usr/libexec/nova-xen-stubdom/dom0-setup install' in post
    assert '/usr/libexec/nova-xen-stubdom/dom0-setup uninstall' in preun
    assert 'Requires:       python(abi) = 3.6' in spec
