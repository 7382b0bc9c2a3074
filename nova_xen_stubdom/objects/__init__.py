"""Versioned objects that cross Nova's RPC between services.

Importing this package must stay cheap and free of Nova imports: the
``hook`` module is loaded at interpreter start-up (see ``hook``) in every
Nova service of the environment.
"""
