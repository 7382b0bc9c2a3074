"""XAPI's datamodel (classes, fields, messages, errors) and the checks
against it.  Shared by the client layer (``xapi/``), the simulator
(``sim/``) and the docs; it imports neither of them."""
