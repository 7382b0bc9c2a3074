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


def sparse_copy(src: str, dst: str) -> None:
    """Make *dst* read like *src* over src's size, writing only allocated
    extents (a larger *dst* keeps its size; its old contents go)."""
    size = os.path.getsize(src)
    with open(src, 'rb') as fin, open(dst, 'r+b') as fout:
        keep = max(size, os.path.getsize(dst))
        fout.truncate(0)
        fout.truncate(keep)
        fd = fin.fileno()
        off = 0
        while off < size:
            try:
                data = os.lseek(fd, off, os.SEEK_DATA)
            except OSError:     # ENXIO: only a hole is left
                break
            hole = min(os.lseek(fd, data, os.SEEK_HOLE), size)
            fin.seek(data)
            fout.seek(data)
            left = hole - data
            while left:
                chunk = fin.read(min(left, 1 << 20))
                if not chunk:
                    break
                fout.write(chunk)
                left -= len(chunk)
            off = hole
