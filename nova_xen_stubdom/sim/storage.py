"""VDI contents: one sparse file per VDI, ``<vdi_dir>/<vdi uuid>.img``."""
import os
import tempfile
import threading

_lock = threading.Lock()
_tmp_dirs = {}


def vdi_dir(pool) -> str:
    if pool.vdi_dir:
        os.makedirs(pool.vdi_dir, exist_ok=True)
        return pool.vdi_dir
    with _lock:
        d = _tmp_dirs.get(id(pool))
        if d is None:
            d = tempfile.mkdtemp(prefix='nxs-sim-vdis-')
            _tmp_dirs[id(pool)] = d
            pool.vdi_dir = d
            pool.vdi_dir_is_temp = True
        return d


def vdi_path(pool, uuid: str) -> str:
    return os.path.join(vdi_dir(pool), '%s.img' % uuid)


def create_file(pool, uuid: str, size: int) -> str:
    path = vdi_path(pool, uuid)
    with open(path, 'wb') as f:
        f.truncate(size)
    return path


def resize_file(pool, uuid: str, size: int) -> None:
    with open(vdi_path(pool, uuid), 'r+b') as f:
        f.truncate(size)


def remove_file(pool, uuid: str) -> None:
    try:
        os.unlink(vdi_path(pool, uuid))
    except FileNotFoundError:
        pass


def allocated_bytes(path: str) -> int:
    return os.stat(path).st_blocks * 512
