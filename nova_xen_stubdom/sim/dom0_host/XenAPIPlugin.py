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
"""
import sys
import xmlrpc.client


class Failure(Exception):
    def __init__(self, code, params):
        super().__init__(code, params)
        self.params = [code] + list(params)

    def __str__(self):
        return str(self.params)


def _print(out):
    print(xmlrpc.client.dumps((out,), '', True))


def dispatch(fn_table):
    if len(sys.argv) != 2:
        raise Exception('Incorrect number of commandline arguments')
    params, method = xmlrpc.client.loads(sys.argv[1])
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
