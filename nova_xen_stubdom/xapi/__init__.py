"""The XAPI client layer: how this project talks to a XAPI pool.

Everything goes through :class:`~nova_xen_stubdom.xapi.client.XAPIClient`
(built from ``[xen_stubdom]`` options with ``XAPIClient.from_conf``):

* ``call('VM.get_record', ref)`` — one entry point, dotted XAPI message
  names; a bounded pool of logged-in sessions (``connection_concurrent``),
  one re-login on ``SESSION_INVALID``, the ``HOST_IS_SLAVE`` redirect and
  master failover, retries of transient failures, XAPI failures raised as
  :mod:`~nova_xen_stubdom.xapi.errors` classes;
* ``call_async('VM.start', ...)`` — ``Async.*`` with a task wait, cancel on
  timeout, task destroyed (:mod:`~nova_xen_stubdom.xapi.tasks`);
* ``start_cache(...)`` — the ``event.from``-fed record cache
  (:mod:`~nova_xen_stubdom.xapi.cache`);
* ``http_put``/``http_get`` — XAPI's disk import/export handlers;
* ``close()`` — logs out every session.

Modules: ``constants`` (XAPI names), ``power`` (to Nova's power states;
the only module that imports Nova, lazily), ``recorder`` and ``fidelity``
(what was called, checked against XAPI's datamodel), ``transport`` (TLS and
timeouts), ``pool``, ``session``, ``failover``, ``handlers``, ``redact``.
"""
