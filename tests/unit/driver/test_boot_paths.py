"""The stub-domain image paths obey XAPI's direct-boot rule
(xen-api ocaml/xapi/xapi_xenops.ml, kernel_path: only under
/var/lib/xcp/guest/); see doc/source/xapi-behaviour.rst."""
import pytest

from nova import exception

from nova_xen_stubdom.driver import driver
from nova_xen_stubdom.stubdom import image


@pytest.mark.parametrize('path', [
    '/var/lib/xcp/guest/nova-xen-stubdom-kernel',
    '/var/lib/xcp/guest/sub/k',
])
def test_allowed_paths(path):
    assert image.boot_path_problem(path) is None


@pytest.mark.parametrize('path', [
    '/usr/lib/xen/boot/nova-xen-stubdom-kernel',
    '/boot/guest/nova-xen-stubdom-kernel',
    '/var/lib/xcp/guest/../../../../boot/xen.gz',
    '/var/lib/xcp/guestbook/k',
    'nova-xen-stubdom-kernel',
])
def test_refused_paths(path):
    assert image.boot_path_problem(path)


def test_defaults_are_allowed():
    for opt in ('stubdom_kernel', 'stubdom_ramdisk'):
        assert image.boot_path_problem(
            driver.CONF.xen_stubdom[opt]) is None


@pytest.mark.parametrize('opt', ['stubdom_kernel', 'stubdom_ramdisk'])
def test_init_host_refuses_boot_files_outside_the_allowed_dir(opt):
    conf = driver.CONF
    conf.set_override('connection_url', 'http://127.0.0.1:1',
                      group='xen_stubdom')
    conf.set_override(opt, '/usr/lib/xen/boot/x', group='xen_stubdom')
    try:
        with pytest.raises(exception.InvalidConfiguration) as info:
            driver.XenStubdomDriver(None).init_host('h')
        assert opt in str(info.value)
        assert '/var/lib/xcp/guest/' in str(info.value)
    finally:
        conf.clear_override(opt, group='xen_stubdom')
        conf.clear_override('connection_url', group='xen_stubdom')
