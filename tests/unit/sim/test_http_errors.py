"""The simulator's HTTP server: a client that goes away mid-answer (the
event cache stopping its long poll) is not an error worth a traceback; a
failing handler is."""
import logging

import pytest

from nova_xen_stubdom.sim import server


def _handle(exc, caplog):
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger=server.LOG.name):
        try:
            raise exc
        except Exception:
            server._HTTPServer.handle_error(object(), None,
                                            ('127.0.0.1', 4242))
    return [r for r in caplog.records if r.name == server.LOG.name]


@pytest.mark.parametrize('exc', [BrokenPipeError(32, 'Broken pipe'),
                                 ConnectionResetError(104, 'reset')])
def test_client_gone_is_quiet(exc, caplog, capsys):
    assert _handle(exc, caplog) == []
    # socketserver's own handle_error prints the traceback on stderr
    assert capsys.readouterr().err == ''


def test_handler_failure_is_logged(caplog):
    records = _handle(ValueError('bug'), caplog)
    assert len(records) == 1
    assert records[0].levelno == logging.ERROR
    assert '127.0.0.1' in records[0].getMessage()
    assert records[0].exc_info[0] is ValueError
