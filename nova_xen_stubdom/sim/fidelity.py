"""How much of XAPI's datamodel the simulator serves (coverage figures).

The checks against the datamodel live in
:mod:`nova_xen_stubdom.datamodel.fidelity`; they are re-exported here for
the simulator's tests.
"""
from typing import List

from nova_xen_stubdom.datamodel.fidelity import (  # noqa: F401 (re-export)
    ERRORS_WITHOUT_PARAMS, GENERIC_ERRORS, MESSAGE_ERRORS, SOURCE_ARITY,
    check_call, check_call_types, check_error, check_record,
    wire_type_problem)
from nova_xen_stubdom.datamodel.schema import load


def implicit_coverage() -> dict:
    """How many datamodel messages the simulator serves generically."""
    from nova_xen_stubdom.sim import api, server  # noqa: F401 (registers)
    schema = load()
    total = generic = hand = live = 0
    for c in schema.classes.values():
        for m in c.messages.values():
            total += 1
            if m.state == 'removed':
                continue
            live += 1
            if m.wire_name in api.HANDLERS:
                hand += 1
            elif m.implicit or api.is_generic_shape(m):
                generic += 1
    return {'messages': total, 'live_messages': live,
            'generic': generic, 'hand_written': hand,
            'not_implemented': live - generic - hand}


def hand_written_table() -> List[tuple]:
    """(message, roles allowed) of every message with hand-written code."""
    from nova_xen_stubdom.sim import api, server  # noqa: F401 (registers)
    out = []
    for name in sorted(api.HANDLERS):
        msg = load().message(name)
        out.append((name, 'implicit' if msg.implicit else 'explicit'))
    return out


def main(argv=None) -> int:
    """``python -m nova_xen_stubdom.sim.fidelity``: the coverage figures."""
    cov = implicit_coverage()
    print('datamodel messages: %(messages)d (%(live_messages)d not removed)'
          % cov)
    print('served generically: %d (%.1f%% of live messages)'
          % (cov['generic'], 100.0 * cov['generic'] / cov['live_messages']))
    print('hand-written: %d; answering NOT_IMPLEMENTED: %d'
          % (cov['hand_written'], cov['not_implemented']))
    for name, kind in hand_written_table():
        print('  %-40s %s' % (name, kind))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
