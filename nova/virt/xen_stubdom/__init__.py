# NOTE: this file is installed INTO Nova's package (``nova/virt/xen_stubdom``)
# by the nova-xen-stubdom distribution.  Nova's loader only imports
# ``'nova.virt.' + CONF.compute_driver``, and no entry point exists for
# compute drivers, so ``compute_driver = xen_stubdom.XenStubdomDriver`` needs
# a module at exactly this name.  The distribution ships only this one
# directory: never ``nova/__init__.py`` or ``nova/virt/__init__.py``, which
# belong to Nova.
"""Nova loader shim for the nova-xen-stubdom compute driver."""
from nova_xen_stubdom.driver.driver import XenStubdomDriver

__all__ = ['XenStubdomDriver']
