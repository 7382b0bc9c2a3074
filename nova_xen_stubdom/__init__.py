"""nova-xen-stubdom: Nova compute driver for Xen/XAPI with Linux stub domains.

This package's ``__init__`` must stay free of Nova imports: Nova's test
harness decides eventlet monkey patching on import, and anything that pulls
in urllib3 or oslo.context before that breaks it.
"""
