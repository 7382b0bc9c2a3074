"""A multi-process test cloud on loopback: ``nova-xen-stubdom cloud``.

MariaDB and RabbitMQ (Debian's packages), keystone, glance, placement and
nova-api under uwsgi, nova-conductor, nova-scheduler and two nova-compute
processes running ``xen_stubdom.XenStubdomDriver`` against the embedded XAPI
simulator, plus a minimal neutron stand-in.  Every process is started by this
package, recorded by PID under ``<dir>/run`` and stopped by that PID.

This is test infrastructure (the integration tier and developers' manual
checks), not a deployment tool: ports are fixed on 127.0.0.1 and passwords
are throw-away.
"""
