"""Stand-in of dom0's ``XenAPIPlugin`` module for simulated hosts.

On a real host XAPI forks ``/etc/xapi.d/plugins/<name>`` with the XML-RPC
call as ``argv[1]``; the plugin calls ``XenAPIPlugin.dispatch(table)``,
which decodes the call, runs ``table[fn](session, args)`` and prints an
XML-RPC response: ``{'Status': 'Success', 'Value': result}``, or
``{'Status': 'Failure', 'ErrorDescription': [...]}`` for a ``Failure``,
any other exception (``XENAPI_PLUGIN_FAILURE``, fn, type, message) and an
unknown function (``UNKNOWN_XENAPI_PLUGIN_FUNCTION``) -- the behaviour of
xapi-project/xen-api ``scripts/examples/python/XenAPIPlugin.py``
``dispatch``.  The simulator puts this directory first on the plugin
process's ``sys.path``.  No XAPI session object is built: the simulated
plugin gets the session reference as a string.

The real module imports ``XenAPI`` and with it ``xmlrpc.client``, whose
import of ``http.client``, ``email`` and ``ssl`` cost a plugin process more
than everything else it does (measured in ``doc/source/simulator.rst``).
That cost is dom0's, the same for every XAPI plugin; the simulator runs
a plugin per ``host.call_plugin``, so this stand-in codes the XML-RPC it
needs itself over ``xml.parsers.expat`` (what ``xmlrpc.client`` parses
with): the value types of the XML-RPC spec except base64 and dateTime,
which a ``host.call_plugin`` (``(session, Map(String, String))`` in,
a string out) never carries.  ``tests/unit/sim/test_plugin_process.py``
checks it against ``xmlrpc.client`` both ways.
"""
import sys
from xml.parsers import expat


class Failure(Exception):
    def __init__(self, code, params):
        super().__init__(code, params)
        self.params = [code] + list(params)

    def __str__(self):
        return str(self.params)


# -- decoding: an XML-RPC methodCall -------------------------------------
_SCALARS = {
    'string': str, 'int': int, 'i4': int, 'i8': int, 'double': float,
    'boolean': lambda text: {'0': False, '1': True}[text.strip()],
    'nil': lambda _text: None,
}


class _Struct:
    __slots__ = ('members', 'name')

    def __init__(self):
        self.members = {}
        self.name = None


class _Decoder:
    """Builds (params, method) from expat events (one pass, no tree)."""

    def __init__(self):
        self.stack = []         # open containers: a list or a _Struct
        self.text = []
        self.typed = False      # the open <value> has a type element
        self.method = None
        self.params = []

    def start(self, tag, _attrs):
        self.text = []
        if tag == 'value':
            self.typed = False
        elif tag == 'array':
            self.stack.append([])
        elif tag == 'struct':
            self.stack.append(_Struct())
        elif tag in ('base64', 'dateTime.iso8601'):
            raise ValueError('XML-RPC %s is not used by host.call_plugin'
                             % tag)
        if tag in _SCALARS or tag in ('array', 'struct'):
            self.typed = True

    def _put(self, value):
        if not self.stack:
            self.params.append(value)
        elif isinstance(self.stack[-1], _Struct):
            self.stack[-1].members[self.stack[-1].name] = value
        else:
            self.stack[-1].append(value)

    def end(self, tag):
        text = ''.join(self.text)
        self.text = []
        if tag == 'methodName':
            self.method = text
        elif tag == 'name':
            self.stack[-1].name = text
        elif tag in _SCALARS:
            self._put(_SCALARS[tag](text))
        elif tag == 'array':
            self._put(self.stack.pop())
        elif tag == 'struct':
            self._put(self.stack.pop().members)
        elif tag == 'value':
            if not self.typed:
                self._put(text)     # a value without a type is a string
            self.typed = True       # the value around this one is typed

    def chars(self, data):
        self.text.append(data)


def loads(data):
    """``(params, method)`` of an XML-RPC methodCall."""
    dec = _Decoder()
    parser = expat.ParserCreate('UTF-8')
    parser.StartElementHandler = dec.start
    parser.EndElementHandler = dec.end
    parser.CharacterDataHandler = dec.chars
    parser.Parse(data.encode('utf-8') if isinstance(data, str) else data,
                 True)
    return tuple(dec.params), dec.method


# -- encoding: an XML-RPC methodResponse ---------------------------------
def _escape(text):
    return text.replace('&', '&amp;').replace('<', '&lt;').replace(
        '>', '&gt;')


def _value(obj, out):
    if obj is None:
        out.append('<value><nil/></value>')
    elif isinstance(obj, bool):
        out.append('<value><boolean>%d</boolean></value>' % obj)
    elif isinstance(obj, int):
        out.append('<value><int>%d</int></value>' % obj)
    elif isinstance(obj, float):
        out.append('<value><double>%r</double></value>' % obj)
    elif isinstance(obj, str):
        out.append('<value><string>%s</string></value>' % _escape(obj))
    elif isinstance(obj, (list, tuple)):
        out.append('<value><array><data>\n')
        for item in obj:
            _value(item, out)
        out.append('</data></array></value>\n')
    elif isinstance(obj, dict):
        out.append('<value><struct>\n')
        for key, item in obj.items():
            out.append('<member>\n<name>%s</name>\n' % _escape(str(key)))
            _value(item, out)
            out.append('</member>\n')
        out.append('</struct></value>\n')
    else:
        raise TypeError('cannot marshal %s objects' % type(obj).__name__)


def dumps_response(obj):
    """An XML-RPC methodResponse carrying *obj*."""
    out = ["<?xml version='1.0'?>\n<methodResponse>\n<params>\n<param>\n"]
    _value(obj, out)
    out.append('</param>\n</params>\n</methodResponse>\n')
    return ''.join(out)


def _print(out):
    print(dumps_response(out))


def dispatch(fn_table):
    if len(sys.argv) != 2:
        raise Exception('Incorrect number of commandline arguments')
    params, method = loads(sys.argv[1])
    session, args = params[0], params[1]
    if method not in fn_table:
        _print({'Status': 'Failure', 'ErrorDescription':
                ['UNKNOWN_XENAPI_PLUGIN_FUNCTION', method]})
        return
    try:
        result = fn_table[method](session, args)
        _print({'Status': 'Success', 'Value': result})
    except SystemExit:
        raise
    except Failure as exc:
        _print({'Status': 'Failure', 'ErrorDescription': exc.params})
    except Exception as exc:
        _print({'Status': 'Failure', 'ErrorDescription': [
            'XENAPI_PLUGIN_FAILURE', method, type(exc).__name__, str(exc)]})
