"""XAPI call dispatch: envelope, checks XAPI makes before running a message,
generic (implicit) messages for every class, Async tasks.

A call goes through, in XAPI's order: method lookup (``MESSAGE_METHOD_UNKNOWN``
/ ``MESSAGE_REMOVED``), parameter count (``MESSAGE_PARAMETER_COUNT_MISMATCH``),
session (``SESSION_INVALID``), role (``RBAC_PERMISSION_DENIED``), parameter
types (``FIELD_TYPE_ERROR``), references (``HANDLE_INVALID``), then the
hand-written handler registered for the message or the generic one.
"""
import collections
import copy
import dataclasses
import logging
import time
import traceback
import xmlrpc.client
from typing import Any, Callable, Dict, List, Optional

from nova_xen_stubdom.sim import wire
from nova_xen_stubdom.sim.errors import XapiError, handle_invalid
from nova_xen_stubdom.sim.faults import DropConnection
from nova_xen_stubdom.datamodel.schema import NULL_REF, Message, load

LOG = logging.getLogger(__name__)

#: "Class.message" -> handler(ctx, *args)
HANDLERS: Dict[str, Callable] = {}
#: class -> hook(ctx, ref) run after a generic create / before destroy
AFTER_CREATE: Dict[str, Callable] = {}
BEFORE_DESTROY: Dict[str, Callable] = {}
#: wire name -> calls answered (successes and XAPI failures), process-wide
CALLS = collections.Counter()
#: calls that need no session
UNAUTHENTICATED = {'session.login_with_password',
                   'session.slave_local_login_with_password',
                   'session.get_all_subject_identifiers'}


def handler(*names: str):
    def register(fn):
        for name in names:
            HANDLERS[name] = fn
        return fn
    return register


@dataclasses.dataclass
class Context:
    pool: Any                       # nova_xen_stubdom.sim.pool.Pool
    host: Any                       # the HostRuntime the call arrived on
    message: Message
    session: str = NULL_REF
    task: Optional[str] = None      # task ref when run through Async.*
    client: str = ''                # peer address

    @property
    def db(self):
        return self.pool.db

    def host_of(self, ref: str):
        """The HostRuntime of a host ref argument (HANDLE_INVALID if it is
        no host of this pool, HOST_OFFLINE if it is down)."""
        h = self.pool.host_by_ref(ref)
        if h is None:
            raise handle_invalid('host', ref)
        if h.down:
            # message_forwarding.ml check_live: no forwarding to a member
            # the master holds dead (sim/hostfail.py)
            raise XapiError('HOST_OFFLINE', ref)
        return h

    def check_cancel(self) -> None:
        if self.task and self.pool.tasks.cancel_requested(self.task):
            raise XapiError('TASK_CANCELLED', self.task)

    def progress(self, fraction: float) -> None:
        if self.task:
            self.pool.tasks.progress(self.task, fraction)


def success(value: Any) -> dict:
    return {'Status': 'Success', 'Value': value}


def failure(err: XapiError) -> dict:
    return {'Status': 'Failure', 'ErrorDescription': err.description}


def dispatch(pool, host, method: str, params: tuple, client: str = ''
             ) -> dict:
    """Run one XML-RPC call; always returns XAPI's envelope."""
    CALLS[method] += 1
    try:
        return success(call(pool, host, method, list(params), client))
    except XapiError as e:
        _log_error(pool, method, e)
        return failure(e)
    except DropConnection:
        raise
    except Exception as e:  # a simulator bug: report it as XAPI would
        LOG.exception('internal error in %s', method)
        err = XapiError('INTERNAL_ERROR', '%s: %s' % (type(e).__name__, e))
        _log_error(pool, method, err)
        return failure(err)


def _log_error(pool, method: str, err: XapiError) -> None:
    # the fidelity tests check every error the simulator answered
    log = pool.error_log
    log.append((method, err.description))
    if len(log) > 10000:
        del log[:5000]


def call(pool, host, method: str, params: List[Any], client: str = ''):
    schema = load()
    is_async = method.startswith('Async.')
    name = method[len('Async.'):] if is_async else method
    delay = pool.faults.before_call(name, host, sleep=not is_async)
    msg = schema.message(name)
    if msg is None or (is_async and msg.implicit
                       and msg.name not in ('create', 'destroy')):
        raise XapiError('MESSAGE_METHOD_UNKNOWN', method)
    if msg.state == 'removed':
        raise XapiError('MESSAGE_REMOVED')
    if len(params) != len(msg.params):
        raise XapiError('MESSAGE_PARAMETER_COUNT_MISMATCH', method,
                        len(msg.params), len(params))
    ctx = Context(pool, host, msg, client=client)
    args = list(params)
    if name not in UNAUTHENTICATED:
        if not msg.params or msg.params[0][1] != 'session_id':
            pass
        else:
            ctx.session = pool.sessions.check(args.pop(0), host)
            pool.sessions.check_role(ctx.session, msg)
        decl = msg.params[1:] if ctx.session != NULL_REF else msg.params
    else:
        decl = msg.params
    decoded = []
    for (t, pname), value in zip(decl, args):
        v = wire.decode(t, value, pname)
        if t.kind == 'ref' and v != NULL_REF and t.name != 'session':
            if not ctx.db.exists(t.name, v):
                raise handle_invalid(t.name, v)
        decoded.append(v)
    fn = HANDLERS.get(name)
    if fn is None:
        if msg.implicit or is_generic_shape(msg):
            fn = generic
        else:
            raise XapiError('NOT_IMPLEMENTED', name)
    if is_async:
        return pool.tasks.submit(ctx, _faulty(fn, name, delay), decoded)
    pool.faults.check_fail(name, host)
    result = fn(ctx, *decoded)
    return wire.encode(msg.result, result)


def _faulty(fn: Callable, name: str, delay: float) -> Callable:
    """*fn* behind the injected latency and failures, inside a task."""
    def run(ctx, *args):
        end = time.monotonic() + delay
        while time.monotonic() < end:
            ctx.check_cancel()
            time.sleep(min(0.02, max(0.0, end - time.monotonic())))
        ctx.check_cancel()
        ctx.pool.faults.check_fail(name, ctx.host)
        return fn(ctx, *args)
    return run


def run_in_task(ctx: Context, fn: Callable, args: list) -> Any:
    """Body of an Async task: the result encoded like XAPI's task.result."""
    value = fn(ctx, *args)
    if ctx.message.result.kind == 'void':
        return ''
    encoded = wire.encode(ctx.message.result, value)
    # XAPI stores the XML-RPC encoding of the result: "<value>...</value>"
    body = xmlrpc.client.dumps((encoded,), methodresponse=True)
    start = body.index('<value>')
    end = body.rindex('</value>') + len('</value>')
    return body[start:end]


# -- generic implicit messages ---------------------------------------------
_GENERIC_NAMES = ('get_all', 'get_all_records', 'get_by_uuid',
                  'get_by_name_label', 'get_record')


def is_generic_shape(msg: Message) -> bool:
    """An explicit message that behaves like an implicit accessor (some
    classes declare their own get_all / get_all_records / get_record)."""
    if msg.name in _GENERIC_NAMES:
        return True
    fields = load().live_fields(msg.cls)
    n, count = msg.name, len(msg.params)
    return (n.startswith('get_') and n[4:] in fields and count == 2) or \
        (n.startswith('set_') and n[4:] in fields and count == 3) or \
        (n.startswith('add_to_') and n[7:] in fields and count == 4) or \
        (n.startswith('remove_from_') and n[12:] in fields and count == 3) \
        or (n.startswith('add_') and n[4:] in fields and count == 3) or \
        (n.startswith('remove_') and n[7:] in fields and count == 3)


def generic(ctx: Context, *args):
    msg = ctx.message
    cls, name = msg.cls, msg.name
    db = ctx.db
    fields = db.schema.live_fields(cls)
    if name == 'get_all':
        return db.all_refs(cls)
    if name == 'get_all_records':
        with db.lock:
            return {r: copy.deepcopy(rec) for r, rec in db.tables[cls].items()}
    if name == 'get_by_uuid':
        return db.by_uuid(cls, args[0])
    if name == 'get_by_name_label':
        return db.find(cls, name_label=args[0])
    if name == 'create':
        return generic_create(ctx, cls, args[0])
    self = args[0]
    if self == NULL_REF or not db.exists(cls, self):
        raise handle_invalid(cls, self)
    if name == 'destroy':
        return generic_destroy(ctx, cls, self)
    if name == 'get_record':
        return db.snapshot(cls, self)
    if name.startswith('get_') and name[4:] in fields:
        with db.lock:
            return copy.deepcopy(db.get(cls, self)[name[4:]])
    if name.startswith('set_') and name[4:] in fields:
        db.set(cls, self, **{name[4:]: args[1]})
        return None
    if name.startswith('add_to_') and name[7:] in fields:
        field = name[7:]
        with db.lock:
            rec = db.get(cls, self)
            if args[1] in rec[field]:
                raise XapiError('MAP_DUPLICATE_KEY', cls, field,
                                rec.get('uuid', self), args[1])
            rec[field][args[1]] = args[2]
            db.touch(cls, self)
        return None
    if name.startswith('remove_from_') and name[12:] in fields:
        field = name[12:]
        with db.lock:
            rec = db.get(cls, self)
            rec[field].pop(args[1], None)
            db.touch(cls, self)
        return None
    if name.startswith('add_') and name[4:] in fields:
        field = name[4:]
        with db.lock:
            rec = db.get(cls, self)
            if args[1] not in rec[field]:
                rec[field].append(args[1])
                db.touch(cls, self)
        return None
    if name.startswith('remove_') and name[7:] in fields:
        field = name[7:]
        with db.lock:
            rec = db.get(cls, self)
            if args[1] in rec[field]:
                rec[field].remove(args[1])
                db.touch(cls, self)
        return None
    raise XapiError('NOT_IMPLEMENTED', msg.wire_name)


def constructor_fields(cls: str) -> Dict[str, Any]:
    return {n: f for n, f in load().live_fields(cls).items()
            if f.qualifier in ('RW', 'RO/constructor')}


def generic_create(ctx: Context, cls: str, record: dict) -> str:
    allowed = constructor_fields(cls)
    for name, f in allowed.items():
        # a constructor field without a default is mandatory in XAPI
        if f.default is None and name not in record:
            raise XapiError('FIELD_TYPE_ERROR', name)
    values = {k: v for k, v in record.items() if k in allowed}
    for k, v in values.items():
        t = allowed[k].type
        if t.kind == 'ref' and v != NULL_REF and not ctx.db.exists(t.name, v):
            raise handle_invalid(t.name, v)
    hook = AFTER_CREATE.get(cls)
    with ctx.db.lock:
        ref = ctx.db.create(cls, values)
        if hook:
            try:
                hook(ctx, ref)
            except Exception:
                ctx.db.destroy(cls, ref)
                raise
    return ref


def generic_destroy(ctx: Context, cls: str, ref: str) -> None:
    hook = BEFORE_DESTROY.get(cls)
    with ctx.db.lock:
        if hook:
            hook(ctx, ref)
        ctx.db.destroy(cls, ref)


def format_exc() -> str:
    return traceback.format_exc()
