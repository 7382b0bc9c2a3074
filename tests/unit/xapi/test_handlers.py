"""XAPI HTTP handlers (import/export of disk contents)."""
import io

import pytest

from nova_xen_stubdom.xapi import errors


def test_http_put_and_get_use_a_pooled_session(fake, client):
    vdi = 'OpaqueRef:vdi1'
    data = bytes(range(256)) * 4096 * 3          # 3 MiB: several chunks
    assert client.http_put('/import_raw_vdi', io.BytesIO(data), len(data),
                           vdi=vdi, format='raw') == len(data)
    assert fake.vdi_data[vdi] == data
    sink = io.BytesIO()
    assert client.http_get('/export_raw_vdi', sink, vdi=vdi,
                           format='raw') == len(data)
    assert sink.getvalue() == data
    assert fake.logins == 1 == fake.open_sessions
    method, path, query = fake.http_requests[0]
    assert (method, path) == ('PUT', '/import_raw_vdi')
    assert query['session_id'] in fake.sessions
    assert ('HTTP PUT /import_raw_vdi', ('map',)) in \
        client.call_log.signatures()


def test_http_error_status_is_an_xapi_error(fake, client):
    with pytest.raises(errors.XAPIError) as info:
        client.http_get('/export_raw_vdi', io.BytesIO(),
                        vdi='OpaqueRef:none')
    assert info.value.code == 'HTTP_404'
    assert client.pool.in_use == 0
