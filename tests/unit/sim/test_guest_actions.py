"""xenopsd's answer to a guest's own shutdown (``sim/guest_actions.py``):
xen-api ``ocaml/xenopsd/lib/xenops_server.ml`` ``VM_check_state`` with the
action lists of ``ocaml/xapi/xapi_xenops.ml`` ``of_vm``."""
import pytest

from nova_xen_stubdom.sim import guest_actions as ga


def _rec(shutdown='destroy', reboot='restart', crash='destroy'):
    return {'actions_after_shutdown': shutdown,
            'actions_after_reboot': reboot, 'actions_after_crash': crash}


@pytest.mark.parametrize('rec,reason,run_time,expected', [
    (_rec(), 'reboot', 500, ['start']),
    (_rec(reboot='destroy'), 'reboot', 500, ['shutdown']),
    (_rec(), 'poweroff', 500, ['shutdown']),
    (_rec(shutdown='restart'), 'poweroff', 500, ['start']),
    (_rec(crash='restart'), 'crash', 500, ['start']),
    # a crash within 120 s of the start halts instead of restarting
    (_rec(crash='restart'), 'crash', 10, ['shutdown']),
    (_rec(crash='preserve'), 'crash', 500, ['pause']),
    (_rec(), 'suspend', 500, ['shutdown']),
])
def test_actions(rec, reason, run_time, expected):
    assert ga.actions(rec, reason, run_time) == expected


def test_bad_reason_changes_nothing():
    with pytest.raises(ValueError, match='reason must be one of'):
        ga.guest_shutdown(None, 1, 'explode')
