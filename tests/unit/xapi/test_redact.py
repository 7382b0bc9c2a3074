"""Secrets never reach logs."""
import logging

import fixtures

from nova_xen_stubdom.xapi import redact


def test_login_password_masked():
    args = ['root', 'Sup3rS3cret', '2.0', 'nova']
    masked = redact.mask_args('session.login_with_password', args)
    assert masked == ['root', '***', '2.0', 'nova']
    assert 'Sup3rS3cret' not in redact.format_call(
        'session.login_with_password', args)


def test_async_and_nested_secrets_masked():
    out = redact.format_call('Async.pool.join',
                             ['10.0.0.1', 'root', 'pw123456'])
    assert 'pw123456' not in out
    out = redact.format_call('host.call_plugin', [
        'OpaqueRef:h', 'nova_xen_stubdom', 'migrate',
        {'target': 'x', 'auth_key': 'k3y', 'password': 'pw'}])
    assert 'k3y' not in out and "'pw'" not in out
    assert "'x'" in out


def test_client_logs_mask_password(fake, make_client):
    logger = fixtures.FakeLogger(level=logging.DEBUG)
    with logger:
        c = make_client(fake.url, password='secret')
        fake.password = 'secret'
        c.call('VM.get_all')
        c.call('VM.set_name_label', sorted(fake.vms)[0],
               'password=hunter2')
        c.close()
    out = logger.output
    assert 'XAPI call VM.get_all' in out
    assert 'secret' not in out
    assert 'hunter2' not in out
    assert 'secret' not in repr(c)
