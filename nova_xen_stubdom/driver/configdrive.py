"""Config drive: Nova's ISO9660 metadata disk as a CD drive of the guest.

Nova writes the image (``nova.virt.configdrive.ConfigDriveBuilder``, which
runs ``[DEFAULT] mkisofs_cmd``, genisoimage by default); it reaches a VDI
of the instance's SR through XAPI's HTTP import (``PUT /import_raw_vdi``,
as images do) and is attached twice at userdevice 3 (the removed XenAPI
driver's ``DEVICE_CONFIGDRIVE``):

* on the **guest** as a ``CD`` VBD, read-only.  The old driver attached a
  read-only *disk*; XAPI refuses that for an HVM guest
  (``DISK_VBD_MUST_BE_READWRITE_FOR_HVM``, xen-api ``ocaml/xapi/xapi_vbd.ml``
  ``plug``), and a CD VBD must be read-only (``VBD_CDS_MUST_BE_READONLY``,
  ``create``).  An HVM CD drive cannot be hot-plugged either
  (``xapi_vbd_helpers.ml`` ``valid_operations``), so the drive is made at
  spawn, before the guest starts;
* on the **stub domain** as a read-only disk (a PV VM may have one): QEMU
  there emulates an IDE CD-ROM from it (``cdroms`` in the device-model
  config, ``dom0/stubdom_link.py``), which is what cloud-init in a guest
  without PV drivers finds (label ``config-2``).

Only ``config_drive_format = iso9660`` is offered: ``vfat`` needs a loop
mount through privsep and would have to be a writable disk.  Whether the
tool is there is checked before spawn creates anything.  The VDI is one
of the instance's disks (``<name>-configdrive``): spawn's rollback and
destroy remove it with the others.
"""
import math
import os
import shutil
import tempfile
from typing import Optional

from oslo_log import log as logging

from nova import conf as nova_conf
from nova.api.metadata import base as instance_metadata
from nova import exception
from nova.i18n import _
from nova.virt import configdrive as nova_configdrive

from nova_xen_stubdom.driver import constants as dc
from nova_xen_stubdom.driver import vmbuild

LOG = logging.getLogger(__name__)
CONF = nova_conf.CONF

DISK = 'configdrive'
USERDEVICE = 3


def required_by(instance) -> bool:
    return nova_configdrive.required_by(instance)


def tool_problem() -> Optional[str]:
    """Why no config drive can be written here, or None."""
    if CONF.config_drive_format != 'iso9660':
        return _('config_drive_format %s: this driver writes iso9660 only '
                 '(an HVM guest takes the drive as a read-only CD)'
                 ) % CONF.config_drive_format
    if shutil.which(CONF.mkisofs_cmd) is None:
        return _('[DEFAULT] mkisofs_cmd %r is not installed (Debian: '
                 'genisoimage)') % CONF.mkisofs_cmd
    return None


class ConfigDriveUnavailable(exception.NovaException):
    msg_fmt = _('instance %(uuid)s needs a config drive, which cannot be '
                'written here: %(reason)s')


def check(instance) -> None:
    """Refuse, before anything exists, an instance whose drive cannot be
    written."""
    if not required_by(instance):
        return
    problem = tool_problem()
    if problem:
        raise ConfigDriveUnavailable(uuid=instance.uuid, reason=problem)


def refuse_moves(instance, operation: str) -> None:
    """An instance with a config drive is not moved (yet): the drive's VDI
    is made at spawn and no migration path carries it, so it is refused
    before anything changes."""
    if instance.config_drive:
        raise exception.MigrationPreCheckError(reason=_(
            '%s of a server with a config drive is not supported by the '
            'xen_stubdom driver yet') % operation)


def build_iso(instance, injected_files, admin_password, network_info,
              path: str) -> int:
    """Write the drive's ISO9660 image to *path*; return its size."""
    extra_md = {'admin_pass': admin_password} if admin_password else {}
    md = instance_metadata.InstanceMetadata(
        instance, content=injected_files or [], extra_md=extra_md,
        network_info=network_info)
    with nova_configdrive.ConfigDriveBuilder(instance_md=md) as builder:
        builder.make_drive(path)
    return os.path.getsize(path)


def attach(ctx, built, instance, sr_ref: str, injected_files,
           admin_password, network_info, do) -> None:
    """Build the drive, import it into a new VDI, attach it (guest CD +
    stub-domain read-only disk).  Everything made is recorded in *built*
    as it is made, so spawn's rollback removes it."""
    # Nova keeps the instance's config_drive flag as the drive exists
    # (force_config_drive, a mandatory image property); the compute
    # manager saves the instance after spawn
    nova_configdrive.update_instance(instance)
    tmpdir = tempfile.mkdtemp(prefix='nova-xen-stubdom-configdrive-')
    try:
        path = os.path.join(tmpdir, 'configdrive.iso')
        size = do('config drive (%s)' % CONF.mkisofs_cmd, build_iso,
                  instance, injected_files, admin_password, network_info,
                  path)
        vdi_size = max(1, math.ceil(size / dc.MiB)) * dc.MiB
        vdi = do('VDI.create (config drive)', ctx.call, 'VDI.create',
                 vmbuild.vdi_record(instance, sr_ref, vdi_size, DISK))
        built.vdis.append(vdi)
        with open(path, 'rb') as f:
            do('config drive import (HTTP PUT /import_raw_vdi)',
               ctx.http_put, '/import_raw_vdi', f, size, vdi=vdi,
               format='raw')
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    attach_vdi(ctx, built, vdi, do)
    LOG.info('config drive attached (%(size)d bytes, VDI %(vdi)s)',
             {'size': size, 'vdi': vdi}, instance=instance)


def attach_vdi(ctx, built, vdi: str, do) -> None:
    """The drive's VDI as the guest's CD and its stub domain's read-only
    disk (recorded in *built*)."""
    rec = vmbuild.vbd_record(built.guest, vdi, USERDEVICE, False, {})
    rec.update(type='CD', mode='RO')
    vbd = do('VBD.create (guest config-drive CD)', ctx.call, 'VBD.create',
             rec)
    built.vbds.append(vbd)
    vbd_uuid = do('VBD.get_uuid', ctx.call, 'VBD.get_uuid', vbd)
    rec = vmbuild.vbd_record(built.stubdom, vdi, USERDEVICE, False,
                             {dc.OC_MIRROR_OF: vbd_uuid})
    rec['mode'] = 'RO'
    built.vbds.append(do(
        'VBD.create (stub domain mirror of the config drive)', ctx.call,
        'VBD.create', rec))
