"""XAPI VM power states → Nova power states.

Nova is imported lazily so that :mod:`nova_xen_stubdom.xapi` stays usable
(simulator, tools) where Nova is not installed.
"""
from nova_xen_stubdom.xapi import constants


def _nova_power_state():
    from nova.compute import power_state  # noqa: deferred, see docstring
    return power_state


def power_state_map() -> dict:
    """Return ``{xapi power state: nova power state}``."""
    ps = _nova_power_state()
    return {
        constants.POWER_STATE_HALTED: ps.SHUTDOWN,
        constants.POWER_STATE_PAUSED: ps.PAUSED,
        constants.POWER_STATE_RUNNING: ps.RUNNING,
        # NOTE(xapi): a suspended XAPI VM has no domain and its memory is on
        # a suspend VDI: that is Nova's SUSPENDED.
        constants.POWER_STATE_SUSPENDED: ps.SUSPENDED,
        # NOTE(xapi): not in the enum any more, but older hosts and some
        # tools still report it.
        'Crashed': ps.CRASHED,
    }


def to_nova_power_state(xapi_state: str) -> int:
    """Map an XAPI ``power_state`` to Nova's, falling back to NOSTATE.

    :param xapi_state: value of ``VM.power_state`` (case as XAPI sends it;
        a different case is tolerated).
    """
    mapping = power_state_map()
    if xapi_state in mapping:
        return mapping[xapi_state]
    for name, value in mapping.items():
        if isinstance(xapi_state, str) and name.lower() == xapi_state.lower():
            return value
    return _nova_power_state().NOSTATE
