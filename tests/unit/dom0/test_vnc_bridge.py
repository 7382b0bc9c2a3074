"""dom0's end of the stub domain's VNC (``dom0/vnc_bridge.py``)."""
import subprocess

from nova_xen_stubdom.dom0 import vnc_bridge


def test_command_listens_where_xenopsd_reports_vnc():
    argv = vnc_bridge.command('/usr/bin/vchan-socket-proxy', 12, 13)
    assert argv == ['/usr/bin/vchan-socket-proxy', '--mode=client', '12',
                    '/local/domain/12/device-model/13/vnc-vchan',
                    '/var/run/xen/vnc-13']


def test_start_runs_the_client_end_private():
    seen = {}

    def popen(argv, **kw):
        seen.update(argv=argv, **kw)
        return 'proc'
    out = vnc_bridge.start(3, 4, which=lambda name: '/x/' + name,
                           popen=popen)
    assert out == 'proc'
    assert seen['argv'][0] == '/x/vchan-socket-proxy'
    assert seen['preexec_fn'] is vnc_bridge._private_umask


def test_without_the_tool_no_bridge(monkeypatch, caplog):
    monkeypatch.setattr(vnc_bridge, 'PROXY_DIRS', ())
    assert vnc_bridge.start(3, 4, which=lambda name: None) is None
    assert 'has no VNC console' in caplog.text
    vnc_bridge.stop(None)


def test_stop_removes_the_listening_socket(monkeypatch, tmp_path):
    sock = tmp_path / 'vnc-7'
    sock.write_text('')         # what the terminated proxy leaves
    monkeypatch.setattr(vnc_bridge, 'DOM0_SOCKET', str(tmp_path / 'vnc-%d'))
    proc = subprocess.Popen(['sleep', '30'])
    vnc_bridge.stop(proc, 7)
    assert proc.returncode is not None
    assert not sock.exists()
    vnc_bridge.stop(subprocess.Popen(['true']), 7)      # already gone
