"""What the kernel offers Cinder's one-machine backends, read from fake
/proc, /sys and /dev trees."""
import pytest

from nova_xen_stubdom.cloud import cli
from nova_xen_stubdom.cloud import volume_backends as vb

FULL_FS = 'nodev\tsysfs\nnodev\tconfigfs\nnodev\tnfsd\nnodev\tnfs\n\text4\n'


def _tree(tmp_path, misc='237 loop-control\n236 device-mapper\n',
          filesystems=FULL_FS, modules=True, iscsi=True, loop=True):
    proc, sys, dev = (tmp_path / n for n in ('proc', 'sys', 'dev'))
    for d in (proc, sys, dev):
        d.mkdir()
    (proc / 'misc').write_text(misc)
    (proc / 'filesystems').write_text(filesystems)
    if modules:
        (proc / 'modules').write_text('')
    if iscsi:
        (sys / 'class' / 'iscsi_transport').mkdir(parents=True)
    if loop:
        (dev / 'loop-control').write_text('')
    return dict(proc=str(proc), sys=str(sys), dev=str(dev))


def test_a_full_kernel_blocks_nothing(tmp_path):
    found = vb.blockers(**_tree(tmp_path))
    assert found == {'lvm-iscsi': [], 'nfs': []}
    assert 'lvm-iscsi: the kernel has what it needs' in vb.summary(found)


def test_a_micro_vm_kernel_names_every_gap(tmp_path):
    """This machine's kind: loop devices, nothing else, no modules."""
    found = vb.blockers(**_tree(
        tmp_path, misc='237 loop-control\n', modules=False, iscsi=False,
        filesystems='nodev\tsysfs\n\text4\nnodev\tfuse\n'))
    lvm = ' '.join(found['lvm-iscsi'])
    assert 'device-mapper' in lvm and 'configfs' in lvm
    assert 'iscsi_transport' in lvm and 'loop devices' not in lvm
    assert 'nfsd' in ' '.join(found['nfs'])
    assert 'NFS client' in ' '.join(found['nfs'])
    for why in found.values():
        assert why[-1] == 'a kernel without loadable modules'


@pytest.mark.parametrize('missing,word', [
    (dict(misc='237 loop-control\n'), 'device-mapper'),
    (dict(loop=False), 'loop devices'),
    (dict(iscsi=False), 'initiator'),
    (dict(filesystems='nodev\tnfsd\nnodev\tnfs\n'), 'configfs'),
])
def test_each_lvm_iscsi_need_alone(tmp_path, missing, word):
    found = vb.blockers(**_tree(tmp_path, **missing))
    assert len(found['lvm-iscsi']) == 1 and word in found['lvm-iscsi'][0]
    assert found['nfs'] == []


def test_cli_exit_status_says_whether_any_backend_can_run(tmp_path,
                                                          monkeypatch,
                                                          capsys):
    monkeypatch.setattr(vb, 'blockers', lambda: {'a': ['x'], 'b': ['y']})
    assert cli.main(['volume-backends']) == 1
    assert 'a: x; b: y' in capsys.readouterr().out
    monkeypatch.setattr(vb, 'blockers', lambda: {'a': ['x'], 'b': []})
    assert cli.main(['volume-backends']) == 0
