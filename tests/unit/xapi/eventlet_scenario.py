"""Run the pool and cache under eventlet's monkey patching (Nova's
default threading mode). Executed in a subprocess by test_eventlet_mode.py;
prints one JSON line with what it observed."""
import eventlet

eventlet.monkey_patch()

import json  # noqa: E402
import sys  # noqa: E402

from nova_xen_stubdom.xapi import client as xapi_client  # noqa: E402
from tests.unit.xapi import fakexapi  # noqa: E402


def main():
    fake = fakexapi.FakeXAPI()
    c = xapi_client.XAPIClient(fake.url, 'root', 'secret', concurrent=3,
                               retry_interval=0.01)
    cache = c.start_cache(classes=('VM',), poll_timeout=0.5)
    cache.wait_ready(10)
    gate = fake.block('VM.get_all')
    pool = eventlet.GreenPool()
    results = []
    for _ in range(10):
        pool.spawn(lambda: results.append(c.call('VM.get_all')))

    def blocked():
        return fake.in_flight_by.get('VM.get_all', 0)
    fake.wait_until(lambda: blocked() == 3, 10)
    eventlet.sleep(0.2)
    in_flight_while_blocked = blocked()
    gate.set()
    pool.waitall()
    vm = sorted(fake.vms)[0]
    c.call('VM.start', vm)
    rec = cache.wait_for('VM', vm, lambda r: r['power_state'] == 'Running',
                         10)
    sessions_before_close = fake.open_sessions
    c.close()
    out = {
        'green': eventlet.patcher.is_monkey_patched('thread'),
        'in_flight_while_blocked': in_flight_while_blocked,
        'results': len(results),
        'peak_in_flight': fake.peak_in_flight,
        'peak_sessions': fake.peak_sessions,
        'cached_power_state': rec['power_state'],
        'sessions_before_close': sessions_before_close,
        'sessions_after_close': fake.open_sessions,
    }
    fake.stop()
    print(json.dumps(out))
    return 0


if __name__ == '__main__':
    sys.exit(main())
