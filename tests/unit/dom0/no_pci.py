"""What the in-memory test backends (fakes.FakeBackend, memhost.MemBackend)
do not have: VDI contents and PCI pass-through -- one definition for both."""


class NoVdisNoPci:
    def vdi_path(self, vdi_uuid):
        raise KeyError(vdi_uuid)

    def iomem_permission(self, *a):
        raise NotImplementedError

    def ioport_permission(self, *a):
        raise NotImplementedError

    def irq_permission(self, *a):
        raise NotImplementedError

    def assign_device(self, *a):
        raise NotImplementedError

    def deassign_device(self, *a):
        raise NotImplementedError
