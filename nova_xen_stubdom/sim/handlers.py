"""Hand-written messages of sessions, hosts, tasks and events."""
import time

from nova_xen_stubdom.sim import plugins, wire
from nova_xen_stubdom.sim.api import handler
from nova_xen_stubdom.sim.errors import XapiError

# -- session ------------------------------------------------------------------


@handler('session.login_with_password')
def login_with_password(ctx, uname, pwd, version, originator):
    return ctx.pool.sessions.login(uname, pwd, ctx.host, originator)


@handler('session.logout')
def logout(ctx):
    ctx.pool.sessions.logout(ctx.session)


@handler('session.local_logout')
def local_logout(ctx):
    ctx.pool.sessions.logout(ctx.session)


@handler('session.get_all_subject_identifiers')
def get_all_subject_identifiers(ctx):
    return []


# -- host ---------------------------------------------------------------------
@handler('host.call_plugin')
def call_plugin(ctx, host_ref, plugin, fn, args):
    return plugins.call_plugin(ctx.host_of(host_ref), plugin, fn, args)


@handler('host.compute_free_memory')
def compute_free_memory(ctx, host_ref):
    return ctx.host_of(host_ref).free_memory()


@handler('host.compute_memory_overhead')
def compute_memory_overhead(ctx, host_ref):
    return 0


@handler('host.get_servertime', 'host.get_server_localtime')
def get_servertime(ctx, host_ref):
    return wire.now()


@handler('host.disable')
def host_disable(ctx, host_ref):
    ctx.db.set('host', host_ref, enabled=False)


@handler('host.enable')
def host_enable(ctx, host_ref):
    ctx.db.set('host', host_ref, enabled=True)


@handler('host.get_uncooperative_resident_VMs')
def uncooperative(ctx, host_ref):
    return []


# -- task ---------------------------------------------------------------------
@handler('task.cancel')
def task_cancel(ctx, task):
    ctx.pool.tasks.cancel(task)


@handler('task.destroy')
def task_destroy(ctx, task):
    ctx.db.destroy('task', task)


@handler('task.create')
def task_create(ctx, label, description):
    ref = ctx.pool.tasks.create(label, ctx.host.ref, ctx.session)
    ctx.db.set('task', ref, name_description=description)
    return ref


# -- event --------------------------------------------------------------------
def _parse_token(token: str) -> int:
    if token == '':
        return 0
    try:
        return int(token.split(',')[0])
    except ValueError:
        raise XapiError('EVENT_FROM_TOKEN_PARSE_FAILURE', token)


def _token(gen: int) -> str:
    return '%020d,%020d' % (gen, 0)


def _classes(classes):
    out = set()
    for c in classes:
        if c == '*':
            return None
        cls, _, ref = c.partition('/')
        out.add(ref if ref else cls.lower())
    return out


@handler('event.from')
def event_from(ctx, classes, token, timeout):
    db = ctx.db
    since = _parse_token(token)
    wanted = _classes(classes)
    deadline = time.monotonic() + max(0.0, min(float(timeout), 3600.0))
    with db.lock:
        # NOTE: event.from never answers EVENTS_LOST (only the legacy
        # event.next does): deletions older than a table's deleted queue are
        # simply not reported (xapi_event.ml from_inner; sim/db.py)
        while True:
            changes = db.changes_since(since, wanted)
            if token == '':
                changes = [c for c in changes if c[3] != 'del']
            if changes or time.monotonic() >= deadline:
                break
            db.changed.wait(max(0.0, deadline - time.monotonic()))
        gen = db.generation
        counts = {}
        for cls, table in db.tables.items():
            if wanted is None or cls.lower() in wanted:
                counts[cls.lower()] = len(table)
    events = []
    stamp = '%.6f' % time.time()
    for g, cls, ref, op, snap in changes:
        ev = {'id': str(g), 'timestamp': stamp, 'class': cls.lower(),
              'operation': op, 'ref': ref}
        if op != 'del':
            ev['snapshot'] = wire.encode_record(cls, snap)
        events.append(ev)
    return _Raw({'events': events, 'valid_ref_counts': {
        k: str(v) for k, v in counts.items()}, 'token': _token(gen)})


class _Raw(dict):
    """A value already in wire form (event.from's untyped batch)."""


# -- the older event API (register / next / unregister) ----------------------
def _registrations(ctx):
    regs = getattr(ctx.pool, 'event_registrations', None)
    if regs is None:
        regs = ctx.pool.event_registrations = {}
    return regs


@handler('event.register')
def event_register(ctx, classes):
    regs = _registrations(ctx)
    with ctx.db.lock:
        reg = regs.setdefault(ctx.session, {'classes': set(),
                                            'gen': ctx.db.generation})
        reg['classes'] |= {c.lower() for c in classes}


@handler('event.unregister')
def event_unregister(ctx, classes):
    reg = _registrations(ctx).get(ctx.session)
    if reg is not None:
        reg['classes'] -= {c.lower() for c in classes}


@handler('event.next')
def event_next(ctx):
    reg = _registrations(ctx).get(ctx.session)
    if reg is None:
        raise XapiError('SESSION_NOT_REGISTERED', ctx.session)
    db = ctx.db
    wanted = None if '*' in reg['classes'] else reg['classes']
    with db.lock:
        # XAPI blocks until something happens; bounded so a dead client's
        # thread ends (the SDK simply calls again)
        deadline = time.monotonic() + 30.0
        while True:
            changes = db.changes_since(reg['gen'], wanted)
            if changes or time.monotonic() >= deadline:
                break
            db.changed.wait(max(0.0, deadline - time.monotonic()))
        reg['gen'] = db.generation
    out = []
    for g, cls, ref, op, snap in changes:
        ev = {'id': g, 'timestamp': wire.now(), 'class': cls.lower(),
              'operation': op, 'ref': ref, 'obj_uuid': snap.get('uuid', '')}
        if op != 'del':
            ev['snapshot'] = wire.encode_record(cls, snap)
        out.append(ev)
    return out


@handler('event.get_current_id')
def event_get_current_id(ctx):
    return ctx.db.generation


@handler('event.inject')
def event_inject(ctx, cls, ref):
    c = ctx.db.class_of(ref)
    if c is None or c.lower() != cls.lower():
        raise XapiError('HANDLE_INVALID', cls, ref)
    ctx.db.touch(c, ref)
    return _token(ctx.db.generation)
