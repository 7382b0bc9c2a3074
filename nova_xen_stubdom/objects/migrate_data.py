"""The live-migration data of this driver, as Nova's RPC carries it.

Nova's conductor deserialises ``migrate_data`` between the destination's
``check_can_live_migrate_destination`` / ``pre_live_migration`` and the
source's ``live_migration``: the class must be registered in Nova's object
registry in *every* service, not only in nova-compute.  :mod:`.hook` makes
sure of that in processes that never load this driver.
"""
from nova.objects import base as obj_base
from nova.objects import fields
from nova.objects import migrate_data
from oslo_versionedobjects import fields as ovo_fields


class _Secret(ovo_fields.String):
    """A string never shown when the object is printed or logged."""

    def stringify(self, value):
        return "'***'" if value else repr(value)


class SecretStringField(ovo_fields.AutoTypedField):
    AUTO_TYPE = _Secret()


@obj_base.NovaObjectRegistry.register
class XenStubdomLiveMigrateData(migrate_data.LiveMigrateData):
    """Where and how the destination dom0 agent receives the guest."""

    # Version 1.0: Initial version (LiveMigrateData 1.4)
    VERSION = '1.0'

    fields = {
        #: address the destination agent listens on for the stream
        'dest_address': fields.StringField(nullable=True),
        #: TCP port of that listener (set by pre_live_migration)
        'dest_port': fields.IntegerField(nullable=True),
        #: per-migration key (hex), fresh for each migration; authenticates
        #: the stream both ways.  Masked when the object is printed.
        'migration_key': SecretStringField(nullable=True),
        #: XAPI uuid of the destination host
        'dest_host_uuid': fields.StringField(nullable=True),
        #: destination free memory (bytes) seen by the destination check
        'dest_free_memory': fields.IntegerField(nullable=True),
        #: guest memory (bytes) the source will send
        'guest_memory': fields.IntegerField(nullable=True),
        #: the destination's HVM maximum CPU policy, JSON {"cpuid", "msrs"}
        #: (hex of libxc's serialised arrays: agent host_cpu_policy)
        'dest_cpu_info': fields.StringField(nullable=True),
        #: disks travel with the guest (no shared SR)
        'block_migration': fields.BooleanField(default=False),
    }

    def obj_make_compatible(self, primitive, target_version):
        super().obj_make_compatible(primitive, target_version)
