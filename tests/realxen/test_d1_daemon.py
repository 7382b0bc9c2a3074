"""The dom0 process model on real Xen 4.17 (tests/realxen/dom0/d1-daemon.sh).

Our dom0 daemon runs with ``backend = xen`` (XenBackend over the real
libxenctrl/libxenstore/libxenforeignmemory); every ``host.call_plugin`` is
the installed XAPI plugin launcher in a fresh process, every wrapper
request a fresh process too.  Shown: the agent's error codes cross the
plugin boundary; link_stubdom + dm_launch give a PV stub domain its HVM
guest (xenstore keys read back with Xen's client, the hypervisor's target
proven by a second ``xc_domain_set_target`` failing with EINVAL, and the
stub foreign-maps the guest); console_log reads a console ring;
save_image / verify_image / undo_save on the running HVM guest; kill -9 of
the daemon in the middle of a save, restart, recovery; ``guest_pv_drivers``
false for the MBR guest and true once dom0 set its
``HVM_PARAM_CALLBACK_IRQ`` as PV drivers would (a stand-in: no guest with
real PV drivers boots in this testbed), after which our suspend path
refuses it and it runs on; nothing left behind.
"""

import pytest

D1 = ('D1-GUESTS-UP', 'D1-DAEMON-UP', 'D1-PYTHON', 'D1-PLUGIN-ERROR',
      'D1-LINK',
      'D1-DM-LAUNCH', 'D1-TARGET-XS', 'D1-TARGET-HV', 'D1-XS-TARGET-BAD',
      'D1-STUB-MAPS', 'D1-CONSOLE', 'D1-SAVE', 'D1-VERIFY', 'D1-UNDO-SAVE',
      'D1-KILL9-MIDSAVE', 'D1-RESTART', 'D1-RECOVERED', 'D1-PV-NONE',
      'D1-PV-CALLBACK', 'D1-PV-LOADED', 'D1-PV-SUSPEND-REFUSED', 'D1-DM-STOP',
      'D1-DAEMON-STOP', 'D1-LEAK-CHECK', 'D1-DONE')


def _marker(boot, name):
    m = boot.marker(name)
    assert m is not None, '%s not seen; %s; last serial lines:\n%s' % (
        name, boot.summary(), '\n'.join(boot.final.last_lines))
    return m


def test_d1_daemon_runs_on_python_36(realxen_boot):
    # XCP-ng 8.3's dom0 is Python 3.6: the daemon process's own interpreter
    # (/proc/PID/exe in dom0) is the 3.6 the overlay carried
    # (tests/realxen/dom0py.py)
    if not realxen_boot.dom0_py36:
        pytest.skip('NOT RUN (dom0 on Python 3.6): %s; dom0 ran our payload '
                    "on the testbed's python3.11" % realxen_boot.why_not_py36)
    m = _marker(realxen_boot, 'D1-PYTHON')
    assert m.args['version'].startswith('3.6.'), repr(m)
    assert m.args['exe'] == realxen_boot.dom0_py36, repr(m)


@pytest.mark.parametrize('name', D1)
def test_d1_step(realxen_boot, name):
    m = _marker(realxen_boot, name)
    assert not m.failed, repr(m)


def test_d1_plugin_reports_agent_error_code(realxen_boot):
    # XENAPI_PLUGIN_FAILURE [code, '', message] with the daemon's code
    assert _marker(realxen_boot, 'D1-PLUGIN-ERROR').args['code'] == \
        'INVALID_ARGUMENT'


def test_d1_link_reaches_xenstore_and_hypervisor(realxen_boot):
    up = _marker(realxen_boot, 'D1-GUESTS-UP')
    guest, stub = up.args['guest'], up.args['stub']
    assert _marker(realxen_boot, 'D1-LINK').args['pending'] == stub
    assert _marker(realxen_boot, 'D1-DM-LAUNCH').args['mode'] == 'stubdom'
    xs = _marker(realxen_boot, 'D1-TARGET-XS')
    assert xs.args['target'] == guest and xs.args['dm_domid'] == stub
    assert xs.args['argv_domid'] == guest    # QEMU's -xen-domid
    # Xen's domctl.c XEN_DOMCTL_set_target: EINVAL once d->target is set
    hv = _marker(realxen_boot, 'D1-TARGET-HV')
    assert hv.args['second_set_target_errno'] == '22'
    maps = _marker(realxen_boot, 'D1-STUB-MAPS')
    assert maps.args['stub'] == stub and maps.args['guest'] == guest


def test_d1_console_is_the_stubs(realxen_boot):
    m = _marker(realxen_boot, 'D1-CONSOLE')
    assert int(m.args['ticks']) > 0
    assert m.args['in_xenconsoled_log'] == '1'


def test_d1_save_of_a_real_hvm_guest(realxen_boot):
    save = _marker(realxen_boot, 'D1-SAVE')
    assert int(save.args['bytes']) > 0 and int(save.args['pages']) > 0
    assert save.args['paused'] == '1'   # left paused for the teardown
    assert save.args['device_state'].startswith('qmp:'), save.args
    verify = _marker(realxen_boot, 'D1-VERIFY')
    assert int(verify.args['device_state_bytes']) == int(
        save.args['device_state'].split(':')[1])
    undo = _marker(realxen_boot, 'D1-UNDO-SAVE')
    assert undo.args['paused'] == '0'
    assert int(undo.args['ticks']) >= int(undo.args['ticks_before']) + 2


def test_d1_kill9_mid_save_recovers(realxen_boot):
    kill = _marker(realxen_boot, 'D1-KILL9-MIDSAVE')
    # cut while the guest was paused and its state disk attached
    assert kill.args['paused_at_kill'] == '1'
    assert kill.args['state_disks_at_kill'] == '1'
    assert kill.args['plugin_error'] == 'DAEMON_UNAVAILABLE'
    rec = _marker(realxen_boot, 'D1-RECOVERED')
    up = _marker(realxen_boot, 'D1-GUESTS-UP')
    assert rec.args['guest'] == up.args['guest']
    assert rec.args['wiring_target'] == up.args['guest']
    assert _marker(realxen_boot, 'D1-RESTART').args['recovered'] == '1'


def test_d1_pv_drivers_detected_and_suspend_refused(realxen_boot):
    guest = _marker(realxen_boot, 'D1-GUESTS-UP').args['guest']
    # the MBR guest makes no hypercalls: HVM_PARAM_CALLBACK_IRQ is 0, as
    # libxl_domain.c libxl__domain_pvcontrol_available reads it
    none = _marker(realxen_boot, 'D1-PV-NONE').args
    assert (none['pv_drivers'], none['domid']) == ('False', guest), none
    # NOT a guest with real PV drivers: dom0 sets the parameter on the MBR
    # guest as a guest's drivers would (xc_hvm_param_set; Xen 4.17 hvm.c
    # hvm_allow_set_param lets the toolstack), a GSI-type via on GSI 28
    cb = _marker(realxen_boot, 'D1-PV-CALLBACK').args
    assert cb['value'] == cb['readback'] == '0x1c', cb
    loaded = _marker(realxen_boot, 'D1-PV-LOADED').args
    assert (loaded['pv_drivers'], loaded['domid']) == ('True', guest), loaded
    # guest_suspend.stop by default (toolstack_managed): refused for the PV
    # drivers, before control/shutdown is written; the guest runs on
    # (same domain, not paused, not shut down, ticks after the refusal)
    m = _marker(realxen_boot, 'D1-PV-SUSPEND-REFUSED')
    a = m.args
    assert (a['refused'], a['pv_reason']) == ('1', '1'), repr(m)
    assert a['guest'] == guest, repr(m)
    assert (a['paused'], a['shutdown']) == ('0', '0'), repr(m)
    assert a['control_shutdown'] in ('empty', 'absent'), repr(m)
    assert int(a['ticks']) > int(a['ticks_before']), repr(m)


def test_d1_clean_stop_and_no_leaks(realxen_boot):
    assert _marker(realxen_boot, 'D1-DM-STOP').args['target_left'] == 'none'
    assert _marker(realxen_boot, 'D1-DAEMON-STOP').args['socket_left'] == '0'
    m = _marker(realxen_boot, 'D1-LEAK-CHECK')
    assert m.args.get('ok') == '1' and m.args['domains'] == '1', (
        repr(m), realxen_boot.out_file('D1-leaks.txt'))
