"""Nova API validators for the ``xen_stubdom:`` flavor extra-spec namespace.

Registered on Nova's ``nova.api.extra_spec_validators`` entry point
(setup.cfg), so ``openstack flavor set --property xen_stubdom:memory_mb=abc``
is refused with HTTP 400 -- and so is an unknown ``xen_stubdom:`` key.
Only Nova's API process imports this module.

Importing it never raises: Nova's stevedore load-failure callback
(``nova/api/validation/extra_specs/validators.py`` ``load_validators``)
itself fails on a failed import (``ep.module_name``), which would take
nova-api's flavor handling down with a broken driver package.  Without the
driver's limits the namespace is not registered, and a warning says why.
"""
import logging

from nova.api.validation.extra_specs import base

LOG = logging.getLogger(__name__)

try:
    from nova_xen_stubdom.driver import guest_config
except Exception as exc:  # anything: see the docstring
    LOG.warning('nova-xen-stubdom: the xen_stubdom: flavor extra specs are '
                'not validated: the driver does not import (%s: %s)',
                type(exc).__name__, exc)
    guest_config = None


def _validators():
    return [
        base.ExtraSpecValidator(
            name='xen_stubdom:memory_mb',
            description=(
                'Memory of the guest\'s device-model stub domain in MiB, '
                'overriding [xen_stubdom] stubdom_memory_mb. Counted against '
                'the host (reserved memory), not the flavor\'s RAM.'),
            value={'type': int, 'min': guest_config.STUBDOM_MEMORY_MIN,
                   'max': guest_config.STUBDOM_MEMORY_MAX},
        ),
        base.ExtraSpecValidator(
            name='xen_stubdom:vcpus',
            description=(
                'vCPUs of the guest\'s device-model stub domain, overriding '
                '[xen_stubdom] stubdom_vcpus.'),
            value={'type': int, 'min': guest_config.STUBDOM_VCPUS_MIN,
                   'max': guest_config.STUBDOM_VCPUS_MAX},
        ),
        base.ExtraSpecValidator(
            name='xen_stubdom:viridian',
            description=(
                'Expose Hyper-V enlightenments (Xen\'s viridian platform '
                'flag) to the guest; useful for Windows guests.'),
            value={'type': bool},
        ),
    ]


EXTRA_SPEC_VALIDATORS = _validators() if guest_config is not None else []


def register():
    return EXTRA_SPEC_VALIDATORS
