"""``--state-dir``: the pool databases survive a restart of the simulator.

``<state-dir>/pool<N>/db.json`` holds every object (sessions and tasks are
dropped on load, as XAPI restarts do to sessions of a dead toolstack); VDI
contents live next to it in ``vdis/<uuid>.img``.  Domains do not survive the
simulator's process: VMs that were running come back Halted (a host reboot).
The file is rewritten atomically whenever the database changed, at most a
few times a second, and on stop.
"""
import json
import logging
import os
import threading

from nova_xen_stubdom.datamodel.schema import NULL_REF

LOG = logging.getLogger(__name__)
FORMAT = 1


def _path(pool) -> str:
    return os.path.join(pool.state_dir, 'db.json')


def save(pool) -> None:
    os.makedirs(pool.state_dir, exist_ok=True)
    db = pool.db
    with db.lock:
        data = {
            'format': FORMAT,
            'pool_ref': pool.ref,
            'generation': db.generation,
            'hosts': [{'uuid': h.uuid, 'ref': h.ref, 'address': h.address}
                      for h in pool.hosts],
            'tables': {c: t for c, t in db.tables.items()
                       if t and c not in ('session', 'task')},
        }
        text = json.dumps(data, sort_keys=True)
    tmp = _path(pool) + '.tmp'
    with open(tmp, 'w') as f:
        f.write(text)
    os.replace(tmp, _path(pool))


def load(pool) -> bool:
    """Fill *pool* from its state dir; False when there is nothing yet."""
    try:
        with open(_path(pool)) as f:
            data = json.load(f)
    except FileNotFoundError:
        return False
    if data.get('format') != FORMAT:
        raise ValueError('%s: unknown state format %r'
                         % (_path(pool), data.get('format')))
    if len(data['hosts']) != len(pool.hosts):
        raise ValueError('%s holds %d host(s) for this pool, asked for %d'
                         % (_path(pool), len(data['hosts']),
                            len(pool.hosts)))
    db = pool.db
    with db.lock:
        for cls, table in data['tables'].items():
            if cls not in db.tables:
                continue
            for ref, rec in table.items():
                full = db.default_record(cls)
                full.update({k: v for k, v in rec.items() if k in full})
                db.tables[cls][ref] = full
                db.ref_class[ref] = cls
                db.gen_of[(cls, ref)] = 1
                db.created_gen[(cls, ref)] = 1
        db.generation = max(1, int(data.get('generation', 1)))
        pool.ref = data['pool_ref']
        for h, saved in zip(pool.hosts, data['hosts']):
            h.uuid = saved['uuid']
            h.ref = saved['ref']
            h.hypervisor.host_uuid = h.uuid
        # the domains died with the old process
        for ref, rec in db.tables['VM'].items():
            if rec['is_control_domain']:
                continue
            if rec['power_state'] in ('Running', 'Paused'):
                rec.update(power_state='Halted', domid=-1,
                           resident_on=NULL_REF, current_operations={})
        for rec in db.tables['host'].values():
            rec['resident_VMs'] = [r for r in rec['resident_VMs']
                                   if db.tables['VM'].get(r, {}).get(
                                       'is_control_domain')]
        for ref in list(db.tables['console']):
            del db.tables['console'][ref]
            db.ref_class.pop(ref, None)
        for rec in db.tables['VM'].values():
            rec['consoles'] = []
        for cls in ('VBD', 'VIF'):
            for rec in db.tables[cls].values():
                rec['currently_attached'] = False
    return True


class Persister:
    """Writes each pool's database after changes (debounced)."""

    def __init__(self, pools, interval: float = 0.5):
        self.pools = pools
        self.interval = interval
        self._stop = threading.Event()
        self._saved = {id(p): -1 for p in pools}
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name='sim-persist')

    def start(self):
        self._thread.start()

    def _flush(self):
        for p in self.pools:
            if p.db.generation != self._saved[id(p)]:
                gen = p.db.generation
                try:
                    save(p)
                    self._saved[id(p)] = gen
                except OSError:
                    LOG.exception('saving simulator state to %s',
                                  p.state_dir)

    def _run(self):
        while not self._stop.wait(self.interval):
            self._flush()

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=5)
        self._flush()
