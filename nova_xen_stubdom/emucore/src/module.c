/*
 * module.c - nova_xen_stubdom._emucore, the Python edge of the kernels.
 *
 * Habits (as CPython's binascii): all state in a module state struct, no
 * static PyObject globals; multi-phase init; arguments as Py_buffer,
 * released under one exit label on every path; the GIL is dropped for bulk
 * work above GIL_THRESHOLD.  Which accelerator each kernel family uses also
 * lives in module state, so a test can walk them without touching others.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pythread.h>
#include <string.h>

#include "emucore.h"
#include "py_compat.h"

/* Below this many bytes, dropping and re-taking the GIL costs more than
 * the work (a single 4 KiB page is a few hundred nanoseconds). */
#define GIL_THRESHOLD (64 * 1024)

typedef struct {
    PyObject *FormatError;
    PyTypeObject *XbzrleCacheType;
    unsigned features;
    size_t zero_idx, crc_idx, diff_idx;
    struct emu_kernels k;
} emu_state;

/* Module state of module m. */
static inline emu_state *get_state(PyObject *m)
{
    return (emu_state *)PyModule_GetState(m);
}

/* Point st->k at the currently selected table entries. */
static void state_apply_accels(emu_state *st)
{
    st->k.zero = (emu_zero_fn)emu_zero_accels[st->zero_idx].fn;
    st->k.crc = (emu_crc_fn)emu_crc_accels[st->crc_idx].fn;
    st->k.diff = (emu_diff_fn)emu_diff_accels[st->diff_idx].fn;
}

/* Raise FormatError(msg, offset) from an emu_err. */
static void raise_format(emu_state *st, const struct emu_err *err)
{
    PyObject *args = Py_BuildValue("(sn)", err->msg, (Py_ssize_t)err->offset);
    if (args) {
        PyErr_SetObject(st->FormatError, args);
        Py_DECREF(args);
    }
}

/* ---- XbzrleCache ------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    struct emu_xbz_cache c;
    size_t capacity;
    PyThread_type_lock lock;   /* held while a batch uses the cache */
} CacheObject;

/* Take o's lock without holding the GIL while we wait. */
static void cache_lock(CacheObject *o)
{
    if (!PyThread_acquire_lock(o->lock, NOWAIT_LOCK)) {
        Py_BEGIN_ALLOW_THREADS
        PyThread_acquire_lock(o->lock, WAIT_LOCK);
        Py_END_ALLOW_THREADS
    }
}

static PyObject *cache_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"capacity_bytes", NULL};
    Py_ssize_t cap;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "n:XbzrleCache", kwlist, &cap)) {
        return NULL;
    }
    if (cap < (Py_ssize_t)EMU_PAGE_SIZE) {
        PyErr_Format(PyExc_ValueError, "capacity_bytes must be at least %u", EMU_PAGE_SIZE);
        return NULL;
    }
    CacheObject *o = (CacheObject *)type->tp_alloc(type, 0);
    if (!o) {
        return NULL;
    }
    o->lock = PyThread_allocate_lock();
    if (!o->lock || emu_xbz_cache_init(&o->c, (size_t)cap) < 0) {
        Py_DECREF(o);
        return PyErr_NoMemory();
    }
    o->capacity = o->c.nslots * EMU_PAGE_SIZE;
    return (PyObject *)o;
}

static void cache_dealloc(CacheObject *o)
{
    PyTypeObject *tp = Py_TYPE(o);
    emu_xbz_cache_free(&o->c);
    if (o->lock) {
        PyThread_free_lock(o->lock);
    }
    tp->tp_free((PyObject *)o);
    Py_DECREF(tp);
}

static PyObject *cache_invalidate(CacheObject *o, PyObject *arg)
{
    unsigned long long pfn = PyLong_AsUnsignedLongLong(arg);
    if (pfn == (unsigned long long)-1 && PyErr_Occurred()) {
        return NULL;
    }
    cache_lock(o);
    emu_xbz_cache_invalidate(&o->c, pfn);
    PyThread_release_lock(o->lock);
    Py_RETURN_NONE;
}

static PyObject *cache_clear(CacheObject *o, PyObject *Py_UNUSED(ignored))
{
    cache_lock(o);
    emu_xbz_cache_clear(&o->c);
    PyThread_release_lock(o->lock);
    Py_RETURN_NONE;
}

static PyObject *cache_stats(CacheObject *o, PyObject *Py_UNUSED(ignored))
{
    cache_lock(o);
    size_t used = emu_xbz_cache_used(&o->c);
    struct emu_xbz_cache c = o->c;
    PyThread_release_lock(o->lock);
    return Py_BuildValue("{s:n,s:n,s:n,s:K,s:K,s:K,s:K}",
                         "capacity_bytes", (Py_ssize_t)o->capacity,
                         "slots", (Py_ssize_t)c.nslots, "used", (Py_ssize_t)used,
                         "hits", (unsigned long long)c.hits,
                         "misses", (unsigned long long)c.misses,
                         "overflows", (unsigned long long)c.overflows,
                         "evictions", (unsigned long long)c.evictions);
}

static Py_ssize_t cache_len(CacheObject *o)
{
    cache_lock(o);
    size_t used = emu_xbz_cache_used(&o->c);
    PyThread_release_lock(o->lock);
    return (Py_ssize_t)used;
}

static PyMethodDef cache_methods[] = {
    {"invalidate", (PyCFunction)cache_invalidate, METH_O,
     "invalidate(pfn)\n--\n\nForget the cached copy of pfn (next send is raw)."},
    {"clear", (PyCFunction)cache_clear, METH_NOARGS,
     "clear()\n--\n\nForget every page and reset the counters."},
    {"stats", (PyCFunction)cache_stats, METH_NOARGS,
     "stats()\n--\n\nDict: capacity_bytes, slots, used, hits, misses, overflows, evictions."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot cache_slots[] = {
    {Py_tp_new, cache_new},
    {Py_tp_dealloc, cache_dealloc},
    {Py_tp_methods, cache_methods},
    {Py_sq_length, cache_len},
    {Py_mp_length, cache_len},
    {Py_tp_doc,
     "XbzrleCache(capacity_bytes)\n--\n\n"
     "Bounded page cache keyed by pfn (direct mapped, power-of-two slots of\n"
     "4 KiB): the copy of each page last sent, for XBZRLE deltas in the next\n"
     "round.  Used by encode_batch(); safe to share between threads."},
    {0, NULL},
};

static PyType_Spec cache_spec = {
    .name = "nova_xen_stubdom._emucore.XbzrleCache",
    .basicsize = sizeof(CacheObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = cache_slots,
};

/* ---- helpers ----------------------------------------------------------- */

/* Get a buffer of u64 words from obj (array('Q'), bytes...). */
static int get_u64_buffer(PyObject *obj, Py_buffer *view, const char *what)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_SIMPLE) < 0) {
        return -1;
    }
    if (view->len % 8) {
        PyErr_Format(PyExc_ValueError, "%s must be a buffer of uint64 (length %zd is not a multiple of 8)",
                     what, view->len);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* ---- zero pages -------------------------------------------------------- */

static PyObject *py_is_zero(PyObject *m, PyObject *args)
{
    Py_buffer buf = {0};
    PyObject *ret = NULL;
    if (!PyArg_ParseTuple(args, "y*:is_zero", &buf)) {
        return NULL;
    }
    struct emu_kernels k = get_state(m)->k;
    bool z;
    if (buf.len >= GIL_THRESHOLD) {
        Py_BEGIN_ALLOW_THREADS
        z = emu_is_zero(&k, buf.buf, (size_t)buf.len);
        Py_END_ALLOW_THREADS
    } else {
        z = emu_is_zero(&k, buf.buf, (size_t)buf.len);
    }
    ret = PyBool_FromLong(z);
    PyBuffer_Release(&buf);
    return ret;
}

static PyObject *py_zero_page_flags(PyObject *m, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"mem", "pfns", NULL};
    Py_buffer mem = {0}, pv = {0};
    PyObject *pfns = Py_None, *ret = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "y*|O:zero_page_flags", kwlist, &mem, &pfns)) {
        return NULL;
    }
    size_t npages = (size_t)mem.len / EMU_PAGE_SIZE, n = npages;
    const uint64_t *list = NULL;
    if (pfns != Py_None) {
        if (get_u64_buffer(pfns, &pv, "pfns") < 0) {
            goto exit;
        }
        list = pv.buf;
        n = (size_t)pv.len / 8;
        for (size_t i = 0; i < n; i++) {
            if (list[i] >= npages) {
                PyErr_Format(PyExc_ValueError, "pfn %llu at index %zu is beyond memory of %zu pages",
                             (unsigned long long)list[i], i, npages);
                goto exit;
            }
        }
    }
    ret = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)n);
    if (!ret) {
        goto exit;
    }
    uint8_t *flags = (uint8_t *)PyBytes_AS_STRING(ret);
    struct emu_kernels k = get_state(m)->k;
    Py_BEGIN_ALLOW_THREADS
    for (size_t i = 0; i < n; i++) {
        size_t p = list ? (size_t)list[i] : i;
        flags[i] = emu_is_zero(&k, (const uint8_t *)mem.buf + p * EMU_PAGE_SIZE, EMU_PAGE_SIZE);
    }
    Py_END_ALLOW_THREADS
exit:
    if (pv.obj) {
        PyBuffer_Release(&pv);
    }
    PyBuffer_Release(&mem);
    return ret;
}

/* ---- crc32c ------------------------------------------------------------ */

static PyObject *py_crc32c(PyObject *m, PyObject *args)
{
    Py_buffer buf = {0};
    unsigned int crc = 0;
    if (!PyArg_ParseTuple(args, "y*|I:crc32c", &buf, &crc)) {
        return NULL;
    }
    struct emu_kernels k = get_state(m)->k;
    if (buf.len >= GIL_THRESHOLD) {
        Py_BEGIN_ALLOW_THREADS
        crc = emu_crc32c(&k, crc, buf.buf, (size_t)buf.len);
        Py_END_ALLOW_THREADS
    } else {
        crc = emu_crc32c(&k, crc, buf.buf, (size_t)buf.len);
    }
    PyBuffer_Release(&buf);
    return PyLong_FromUnsignedLong(crc);
}

/* ---- xbzrle ------------------------------------------------------------ */

static PyObject *py_xbzrle_encode(PyObject *m, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"old", "new", "limit", NULL};
    Py_buffer old = {0}, new_ = {0};
    Py_ssize_t limit = -1;
    PyObject *ret = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "y*y*|n:xbzrle_encode", kwlist,
                                     &old, &new_, &limit)) {
        return NULL;
    }
    if (old.len != new_.len) {
        PyErr_Format(PyExc_ValueError, "old is %zd bytes, new is %zd", old.len, new_.len);
        goto exit;
    }
    if (new_.len >= (1 << 14)) {
        PyErr_SetString(PyExc_ValueError, "pages of at most 16383 bytes (2-byte ULEB128 lengths)");
        goto exit;
    }
    if (limit < 0) {
        limit = new_.len;
    }
    /* No encoding is longer than 3 bytes per 2 input bytes (alternating
     * one-byte runs): a larger limit only wastes the allocation. */
    if (limit > 2 * new_.len + 16) {
        limit = 2 * new_.len + 16;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, limit);
    if (!out) {
        goto exit;
    }
    struct emu_kernels k = get_state(m)->k;
    long r = emu_xbzrle_encode(&k, old.buf, new_.buf, (size_t)new_.len,
                               (uint8_t *)PyBytes_AS_STRING(out), (size_t)limit);
    if (r < 0) {
        Py_DECREF(out);
        ret = Py_NewRef(Py_None);
        goto exit;
    }
    if (_PyBytes_Resize(&out, r) == 0) {
        ret = out;
    }
exit:
    PyBuffer_Release(&old);
    PyBuffer_Release(&new_);
    return ret;
}

static PyObject *py_xbzrle_decode(PyObject *m, PyObject *args)
{
    Py_buffer delta = {0}, page = {0};
    PyObject *ret = NULL;
    if (!PyArg_ParseTuple(args, "y*w*:xbzrle_decode", &delta, &page)) {
        return NULL;
    }
    struct emu_err err = {0};
    /* Validate first so a malformed delta leaves page untouched. */
    long r = emu_xbzrle_decode(delta.buf, (size_t)delta.len, NULL, (size_t)page.len, &err.offset);
    if (r < 0) {
        snprintf(err.msg, sizeof(err.msg), "malformed xbzrle encoding at byte %zu", err.offset);
        raise_format(get_state(m), &err);
        goto exit;
    }
    emu_xbzrle_decode(delta.buf, (size_t)delta.len, page.buf, (size_t)page.len, &err.offset);
    ret = PyLong_FromLong(r);
exit:
    PyBuffer_Release(&delta);
    PyBuffer_Release(&page);
    return ret;
}

/* ---- bitmaps ----------------------------------------------------------- */

/* Resolve npages (-1: every bit of the buffer) against a buffer of len bytes. */
static int bitmap_npages(Py_ssize_t len, long long npages, uint64_t *out)
{
    uint64_t bits = (uint64_t)len * 8;
    if (npages < 0) {
        *out = bits;
        return 0;
    }
    if ((uint64_t)npages > bits) {
        PyErr_Format(PyExc_ValueError, "npages %lld exceeds the bitmap's %llu bits",
                     npages, (unsigned long long)bits);
        return -1;
    }
    *out = (uint64_t)npages;
    return 0;
}

static PyObject *py_bitmap_count(PyObject *m, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"bitmap", "npages", NULL};
    Py_buffer bm = {0};
    long long np = -1;
    uint64_t npages, r;
    PyObject *ret = NULL;
    (void)m;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "y*|L:bitmap_count", kwlist, &bm, &np)) {
        return NULL;
    }
    if (bitmap_npages(bm.len, np, &npages) == 0) {
        Py_BEGIN_ALLOW_THREADS
        r = emu_bitmap_count(bm.buf, npages);
        Py_END_ALLOW_THREADS
        ret = PyLong_FromUnsignedLongLong(r);
    }
    PyBuffer_Release(&bm);
    return ret;
}

static PyObject *py_bitmap_clear(PyObject *m, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"bitmap", "npages", NULL};
    Py_buffer bm = {0};
    long long np = -1;
    uint64_t npages;
    PyObject *ret = NULL;
    (void)m;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "w*|L:bitmap_clear", kwlist, &bm, &np)) {
        return NULL;
    }
    if (bitmap_npages(bm.len, np, &npages) == 0) {
        Py_BEGIN_ALLOW_THREADS
        emu_bitmap_clear(bm.buf, npages);
        Py_END_ALLOW_THREADS
        ret = Py_NewRef(Py_None);
    }
    PyBuffer_Release(&bm);
    return ret;
}

static PyObject *py_bitmap_merge(PyObject *m, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"dst", "src", "npages", NULL};
    Py_buffer dst = {0}, src = {0};
    long long np = -1;
    uint64_t npages;
    PyObject *ret = NULL;
    (void)m;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "w*y*|L:bitmap_merge", kwlist, &dst, &src, &np)) {
        return NULL;
    }
    if (bitmap_npages(dst.len < src.len ? dst.len : src.len, np, &npages) == 0) {
        Py_BEGIN_ALLOW_THREADS
        emu_bitmap_merge(dst.buf, src.buf, npages);
        Py_END_ALLOW_THREADS
        ret = Py_NewRef(Py_None);
    }
    PyBuffer_Release(&dst);
    PyBuffer_Release(&src);
    return ret;
}

static PyObject *py_bitmap_pfns(PyObject *m, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"bitmap", "start", "max_count", "npages", NULL};
    Py_buffer bm = {0};
    long long np = -1;
    unsigned long long start = 0;
    Py_ssize_t max = EMU_MAX_BATCH;
    uint64_t npages, next = 0;
    PyObject *out = NULL, *ret = NULL;
    (void)m;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "y*|KnL:bitmap_pfns", kwlist, &bm, &start,
                                     &max, &np)) {
        return NULL;
    }
    if (bitmap_npages(bm.len, np, &npages) < 0) {
        goto exit;
    }
    if (max <= 0 || max > (1 << 24)) {
        PyErr_SetString(PyExc_ValueError, "max_count must be 1..16777216");
        goto exit;
    }
    out = PyBytes_FromStringAndSize(NULL, max * 8);
    if (!out) {
        goto exit;
    }
    size_t n;
    uint64_t *pfns = (uint64_t *)PyBytes_AS_STRING(out);
    Py_BEGIN_ALLOW_THREADS
    n = emu_bitmap_pfns(bm.buf, npages, start, pfns, (size_t)max, &next);
    Py_END_ALLOW_THREADS
    if (_PyBytes_Resize(&out, (Py_ssize_t)n * 8) < 0) {
        goto exit;
    }
    ret = Py_BuildValue("(NK)", out, (unsigned long long)next);
    out = NULL;
exit:
    Py_XDECREF(out);
    PyBuffer_Release(&bm);
    return ret;
}

/* ---- batches ----------------------------------------------------------- */

static PyObject *py_pfn_range(PyObject *m, PyObject *args)
{
    unsigned long long first;
    Py_ssize_t n;
    (void)m;
    if (!PyArg_ParseTuple(args, "Kn:pfn_range", &first, &n)) {
        return NULL;
    }
    if (n < 0 || n > (1 << 24) || first > EMU_PFN_MASK || n > (Py_ssize_t)(EMU_PFN_MASK - first)) {
        PyErr_SetString(PyExc_ValueError, "pfn_range: n must be 0..2^24 and pfns below 2^52");
        return NULL;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, n * 8);
    if (!out) {
        return NULL;
    }
    uint64_t *w = (uint64_t *)PyBytes_AS_STRING(out);
    for (Py_ssize_t i = 0; i < n; i++) {
        w[i] = first + (uint64_t)i;
    }
    return out;
}

static PyObject *py_encode_bound(PyObject *m, PyObject *arg)
{
    (void)m;
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (n < 0 || n > (Py_ssize_t)EMU_MAX_BATCH) {
        PyErr_Format(PyExc_ValueError, "batch of %zd pages, expected 0..%u", n, EMU_MAX_BATCH);
        return NULL;
    }
    return PyLong_FromSize_t(emu_encode_bound((size_t)n));
}

static PyObject *py_encode_batch(PyObject *m, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"mem", "pfns", "out", "flags", "cache", NULL};
    emu_state *st = get_state(m);
    Py_buffer mem = {0}, pv = {0}, out = {0};
    PyObject *pfns, *cacheobj = Py_None, *ret = NULL;
    unsigned int flags = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "y*Ow*|IO:encode_batch", kwlist, &mem, &pfns,
                                     &out, &flags, &cacheobj)) {
        return NULL;
    }
    CacheObject *cache = NULL;
    if (cacheobj != Py_None) {
        if (!PyObject_TypeCheck(cacheobj, st->XbzrleCacheType)) {
            PyErr_SetString(PyExc_TypeError, "cache must be an XbzrleCache or None");
            goto exit;
        }
        cache = (CacheObject *)cacheobj;
    }
    if (get_u64_buffer(pfns, &pv, "pfns") < 0) {
        goto exit;
    }
    struct emu_kernels k = st->k;
    struct emu_enc_stats s;
    struct emu_err err = {0};
    long r;
    Py_BEGIN_ALLOW_THREADS
    if (cache) {
        PyThread_acquire_lock(cache->lock, WAIT_LOCK);
    }
    r = emu_encode_batch(&k, mem.buf, (size_t)mem.len, pv.buf, (size_t)pv.len / 8, out.buf,
                         (size_t)out.len, flags, cache ? &cache->c : NULL, &s, &err);
    if (cache) {
        PyThread_release_lock(cache->lock);
    }
    Py_END_ALLOW_THREADS
    if (r < 0) {
        raise_format(st, &err);
        goto exit;
    }
    ret = Py_BuildValue("(lnnnnn)", r, (Py_ssize_t)s.raw, (Py_ssize_t)s.zero,
                        (Py_ssize_t)s.xbzrle, (Py_ssize_t)s.unchanged, (Py_ssize_t)s.overflow);
exit:
    if (pv.obj) {
        PyBuffer_Release(&pv);
    }
    PyBuffer_Release(&mem);
    PyBuffer_Release(&out);
    return ret;
}

enum { APPLY_PAGE_DATA, APPLY_ZERO_RUNS, APPLY_XBZRLE };

/* Shared body of the apply_* functions: parse (body, mem, dry_run). */
static PyObject *apply_common(PyObject *m, PyObject *args, PyObject *kw, int which,
                              const char *fmt)
{
    static char *kwlist[] = {"body", "mem", "dry_run", NULL};
    emu_state *st = get_state(m);
    Py_buffer body = {0}, mem = {0};
    PyObject *memobj, *ret = NULL;
    int dry_run = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, fmt, kwlist, &body, &memobj, &dry_run)) {
        return NULL;
    }
    uint8_t *mbuf = NULL;
    size_t mlen;
    if (memobj == Py_None) {
        if (!dry_run) {
            PyErr_SetString(PyExc_ValueError, "mem=None only with dry_run=True");
            goto exit;
        }
        /* No target: bound pfns by the 52-bit pfn field only. */
        mlen = (SIZE_MAX / EMU_PAGE_SIZE < (EMU_PFN_MASK + 1) ? SIZE_MAX / EMU_PAGE_SIZE
                                                               : (EMU_PFN_MASK + 1)) * EMU_PAGE_SIZE;
    } else if (PyLong_Check(memobj)) {
        /* dry_run against a memory size without a buffer (verify passes). */
        if (!dry_run) {
            PyErr_SetString(PyExc_ValueError, "mem as a size only with dry_run=True");
            goto exit;
        }
        mlen = PyLong_AsSize_t(memobj);
        if (mlen == (size_t)-1 && PyErr_Occurred()) {
            goto exit;
        }
    } else {
        if (PyObject_GetBuffer(memobj, &mem, dry_run ? PyBUF_SIMPLE : PyBUF_WRITABLE) < 0) {
            goto exit;
        }
        mbuf = mem.buf;
        mlen = (size_t)mem.len;
    }
    struct emu_kernels k = st->k;
    struct emu_err err = {0};
    long r;
    Py_BEGIN_ALLOW_THREADS
    switch (which) {
    case APPLY_PAGE_DATA:
        r = emu_apply_page_data(body.buf, (size_t)body.len, mbuf, mlen, dry_run, &err);
        break;
    case APPLY_ZERO_RUNS:
        r = emu_apply_zero_runs(&k, body.buf, (size_t)body.len, mbuf, mlen, dry_run, &err);
        break;
    default:
        r = emu_apply_xbzrle(body.buf, (size_t)body.len, mbuf, mlen, dry_run, &err);
        break;
    }
    Py_END_ALLOW_THREADS
    if (r < 0) {
        raise_format(st, &err);
        goto exit;
    }
    ret = PyLong_FromLong(r);
exit:
    if (mem.obj) {
        PyBuffer_Release(&mem);
    }
    PyBuffer_Release(&body);
    return ret;
}

static PyObject *py_apply_page_data(PyObject *m, PyObject *a, PyObject *kw)
{
    return apply_common(m, a, kw, APPLY_PAGE_DATA, "y*O|p:apply_page_data");
}

static PyObject *py_apply_zero_runs(PyObject *m, PyObject *a, PyObject *kw)
{
    return apply_common(m, a, kw, APPLY_ZERO_RUNS, "y*O|p:apply_zero_runs");
}

static PyObject *py_apply_xbzrle(PyObject *m, PyObject *a, PyObject *kw)
{
    return apply_common(m, a, kw, APPLY_XBZRLE, "y*O|p:apply_xbzrle");
}

/* ---- accelerators ------------------------------------------------------ */

/* Next usable entry after idx in table (wrapping to 0 signalled by len). */
static size_t next_usable(const struct emu_accel *t, size_t len, size_t idx, unsigned f)
{
    for (size_t i = idx + 1; i < len; i++) {
        if ((t[i].need & f) == t[i].need) {
            return i;
        }
    }
    return len;
}

static PyObject *py_accels(PyObject *m, PyObject *Py_UNUSED(ignored))
{
    emu_state *st = get_state(m);
    return Py_BuildValue("{s:s,s:s,s:s}",
                         "zero", emu_zero_accels[st->zero_idx].name,
                         "crc32c", emu_crc_accels[st->crc_idx].name,
                         "xbzrle", emu_diff_accels[st->diff_idx].name);
}

static PyObject *py_test_next_accel(PyObject *m, PyObject *Py_UNUSED(ignored))
{
    emu_state *st = get_state(m);
    size_t z = next_usable(emu_zero_accels, emu_zero_accels_len, st->zero_idx, st->features);
    size_t c = next_usable(emu_crc_accels, emu_crc_accels_len, st->crc_idx, st->features);
    size_t r = next_usable(emu_diff_accels, emu_diff_accels_len, st->diff_idx, st->features);
    bool moved = false;
    /* Every family steps to its next usable entry; one that is already at
     * its portable (last) entry stays there.  False once nothing moved. */
    if (z < emu_zero_accels_len) { st->zero_idx = z; moved = true; }
    if (c < emu_crc_accels_len) { st->crc_idx = c; moved = true; }
    if (r < emu_diff_accels_len) { st->diff_idx = r; moved = true; }
    state_apply_accels(st);
    return PyBool_FromLong(moved);
}

static PyObject *py_accel_reset(PyObject *m, PyObject *Py_UNUSED(ignored))
{
    emu_state *st = get_state(m);
    st->zero_idx = emu_accel_best(emu_zero_accels, emu_zero_accels_len, st->features);
    st->crc_idx = emu_accel_best(emu_crc_accels, emu_crc_accels_len, st->features);
    st->diff_idx = emu_accel_best(emu_diff_accels, emu_diff_accels_len, st->features);
    state_apply_accels(st);
    Py_RETURN_NONE;
}

/* ---- read-only views of foreign memory -------------------------------- */

#if PY_VERSION_HEX < 0x03080000

/* memoryview.toreadonly() arrived in Python 3.8; dom0's Python is 3.6.
 * A ReadOnlyMemory exports [address, address+size) as a read-only buffer
 * and keeps `owner` (the object whose lifetime bounds the mapping) alive
 * for as long as any view derived from it exists.  A static type: type
 * slots for the buffer protocol only reached PyType_FromSpec in 3.9.
 * Compiled only where it is needed (before 3.8). */
#include <structmember.h>

typedef struct {
    PyObject_HEAD
    PyObject *owner;
    void *buf;
    Py_ssize_t len;
} RoMemObject;

static int romem_getbuffer(RoMemObject *o, Py_buffer *view, int flags)
{
    return PyBuffer_FillInfo(view, (PyObject *)o, o->buf, o->len, 1, flags);
}

static void romem_dealloc(RoMemObject *o)
{
    Py_XDECREF(o->owner);
    PyObject_Del(o);
}

static PyMemberDef romem_members[] = {
    {"owner", T_OBJECT, offsetof(RoMemObject, owner), READONLY,
     "the object that keeps the memory mapped"},
    {NULL, 0, 0, 0, NULL},
};

static PyBufferProcs romem_as_buffer = {
    (getbufferproc)romem_getbuffer, NULL,
};

static PyTypeObject RoMemType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    "nova_xen_stubdom._emucore.ReadOnlyMemory", /* tp_name */
    sizeof(RoMemObject),                        /* tp_basicsize */
    0,                                          /* tp_itemsize */
    (destructor)romem_dealloc,                  /* tp_dealloc */
    .tp_as_buffer = &romem_as_buffer,
    .tp_members = romem_members,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Read-only buffer over memory kept alive by an owner object.",
};

static PyObject *py_readonly_memory(PyObject *Py_UNUSED(m), PyObject *args)
{
    PyObject *owner;
    unsigned long long address;
    Py_ssize_t size;
    if (!PyArg_ParseTuple(args, "OKn:readonly_memory", &owner, &address,
                          &size)) {
        return NULL;
    }
    if (address == 0 || size < 0) {
        PyErr_SetString(PyExc_ValueError,
                        "readonly_memory: address must be non-zero and "
                        "size non-negative");
        return NULL;
    }
    if (PyType_Ready(&RoMemType) < 0) {
        return NULL;
    }
    RoMemObject *o = PyObject_New(RoMemObject, &RoMemType);
    if (!o) {
        return NULL;
    }
    Py_INCREF(owner);
    o->owner = owner;
    o->buf = (void *)(uintptr_t)address;
    o->len = size;
    return (PyObject *)o;
}
#endif /* < 3.8 */

static PyMethodDef emu_methods[] = {
#if PY_VERSION_HEX < 0x03080000
    {"readonly_memory", py_readonly_memory, METH_VARARGS,
     "readonly_memory(owner, address, size)\n--\n\n"
     "A read-only buffer over raw memory that keeps owner alive (for\n"
     "memoryview() on Pythons without memoryview.toreadonly)."},
#endif
    {"is_zero", py_is_zero, METH_VARARGS,
     "is_zero(buf)\n--\n\nWhether every byte of buf is zero."},
    {"zero_page_flags", (PyCFunction)(void (*)(void))py_zero_page_flags,
     METH_VARARGS | METH_KEYWORDS,
     "zero_page_flags(mem, pfns=None)\n--\n\nbytes with 1 per zero page (of pfns, or of every page)."},
    {"crc32c", py_crc32c, METH_VARARGS,
     "crc32c(data, crc=0)\n--\n\nCRC32C of data, continuing from crc."},
    {"xbzrle_encode", (PyCFunction)(void (*)(void))py_xbzrle_encode, METH_VARARGS | METH_KEYWORDS,
     "xbzrle_encode(old, new, limit=-1)\n--\n\n"
     "QEMU XBZRLE of new against old: bytes (b'' if equal), None if it does not fit limit."},
    {"xbzrle_decode", py_xbzrle_decode, METH_VARARGS,
     "xbzrle_decode(delta, page)\n--\n\nApply delta over the old contents of writable page."},
    {"bitmap_count", (PyCFunction)(void (*)(void))py_bitmap_count, METH_VARARGS | METH_KEYWORDS,
     "bitmap_count(bitmap, npages=-1)\n--\n\nNumber of set bits."},
    {"bitmap_clear", (PyCFunction)(void (*)(void))py_bitmap_clear, METH_VARARGS | METH_KEYWORDS,
     "bitmap_clear(bitmap, npages=-1)\n--\n\nClear the first npages bits."},
    {"bitmap_merge", (PyCFunction)(void (*)(void))py_bitmap_merge, METH_VARARGS | METH_KEYWORDS,
     "bitmap_merge(dst, src, npages=-1)\n--\n\ndst |= src."},
    {"bitmap_pfns", (PyCFunction)(void (*)(void))py_bitmap_pfns, METH_VARARGS | METH_KEYWORDS,
     "bitmap_pfns(bitmap, start=0, max_count=1024, npages=-1)\n--\n\n"
     "(bytes of uint64 pfns of set bits from start, next start)."},
    {"pfn_range", py_pfn_range, METH_VARARGS,
     "pfn_range(first, n)\n--\n\nbytes of the uint64 pfns first .. first + n - 1."},
    {"encode_bound", py_encode_bound, METH_O,
     "encode_bound(n)\n--\n\nOutput bytes encode_batch needs for n pages."},
    {"encode_batch", (PyCFunction)(void (*)(void))py_encode_batch, METH_VARARGS | METH_KEYWORDS,
     "encode_batch(mem, pfns, out, flags=0, cache=None)\n--\n\n"
     "Records of one batch into out: (nbytes, raw, zero, xbzrle, unchanged, overflow)."},
    {"apply_page_data", (PyCFunction)(void (*)(void))py_apply_page_data,
     METH_VARARGS | METH_KEYWORDS,
     "apply_page_data(body, mem, dry_run=False)\n--\n\nValidate, then copy a PAGE_DATA body's pages.\n"
     "dry_run: validate only; mem may then be None (no bound) or a size in bytes."},
    {"apply_zero_runs", (PyCFunction)(void (*)(void))py_apply_zero_runs,
     METH_VARARGS | METH_KEYWORDS,
     "apply_zero_runs(body, mem, dry_run=False)\n--\n\nValidate, then zero a ZERO_RUNS body's pages."},
    {"apply_xbzrle", (PyCFunction)(void (*)(void))py_apply_xbzrle, METH_VARARGS | METH_KEYWORDS,
     "apply_xbzrle(body, mem, dry_run=False)\n--\n\nValidate, then apply an XBZRLE_PAGES body."},
    {"accels", py_accels, METH_NOARGS,
     "accels()\n--\n\nDict of the accelerator in use per kernel family."},
    {"_test_next_accel", py_test_next_accel, METH_NOARGS,
     "_test_next_accel()\n--\n\nTest hook: step every family to its next usable accelerator."},
    {"_accel_reset", py_accel_reset, METH_NOARGS,
     "_accel_reset()\n--\n\nTest hook: back to the best accelerators for this CPU."},
    {NULL, NULL, 0, NULL},
};

/* ---- module lifecycle -------------------------------------------------- */

static int emu_exec(PyObject *m)
{
    emu_state *st = get_state(m);

    st->features = emu_cpu_features();
    st->FormatError = PyErr_NewExceptionWithDoc(
        "nova_xen_stubdom._emucore.FormatError",
        "Malformed record body or encoding: args are (message, byte offset).",
        PyExc_ValueError, NULL);
    if (!st->FormatError || PyModule_AddObjectRef(m, "FormatError", st->FormatError) < 0) {
        return -1;
    }
    st->XbzrleCacheType = (PyTypeObject *)PyType_FromModuleAndSpec(m, &cache_spec, NULL);
    if (!st->XbzrleCacheType ||
        PyModule_AddType(m, st->XbzrleCacheType) < 0) {
        return -1;
    }
    py_accel_reset(m, NULL);
    Py_DECREF(Py_None);  /* py_accel_reset returned a new reference */
    if (PyModule_AddIntConstant(m, "ENC_ZERO", EMU_ENC_ZERO) < 0 ||
        PyModule_AddIntConstant(m, "ENC_XBZRLE", EMU_ENC_XBZRLE) < 0 ||
        PyModule_AddIntConstant(m, "ENC_CRC", EMU_ENC_CRC) < 0 ||
        PyModule_AddIntConstant(m, "PAGE_SIZE", EMU_PAGE_SIZE) < 0 ||
        PyModule_AddIntConstant(m, "MAX_BATCH", EMU_MAX_BATCH) < 0 ||
        PyModule_AddIntConstant(m, "CPU_FEATURES", (long)st->features) < 0) {
        return -1;
    }
    return 0;
}

/* Before 3.9 the GC may traverse (and clear, free) a module whose state is
 * not allocated yet -- a collection during its own import, seen on 3.6 in
 * the dom0 daemon -- so a NULL state is nothing to visit. */
static int emu_traverse(PyObject *m, visitproc visit, void *arg)
{
    emu_state *st = PyModule_GetState(m);
    if (st == NULL) {
        return 0;
    }
    Py_VISIT(st->FormatError);
    Py_VISIT(st->XbzrleCacheType);
    return 0;
}

static int emu_clear(PyObject *m)
{
    emu_state *st = PyModule_GetState(m);
    if (st == NULL) {
        return 0;
    }
    Py_CLEAR(st->FormatError);
    Py_CLEAR(st->XbzrleCacheType);
    return 0;
}

static void emu_free(void *m)
{
    emu_clear((PyObject *)m);
}

static PyModuleDef_Slot emu_slots[] = {
    {Py_mod_exec, emu_exec},
#ifdef Py_mod_multiple_interpreters
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif /* Py_mod_multiple_interpreters */
    {0, NULL},
};

static struct PyModuleDef emu_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "nova_xen_stubdom._emucore",
    .m_doc = "Native data plane of nova-xen-stubdom: zero pages, dirty bitmaps, XBZRLE,\n"
             "CRC32C and Xen migration stream v2 page records.  Use the Python API in\n"
             "nova_xen_stubdom.emucore.",
    .m_size = sizeof(emu_state),
    .m_methods = emu_methods,
    .m_slots = emu_slots,
    .m_traverse = emu_traverse,
    .m_clear = emu_clear,
    .m_free = emu_free,
};

PyMODINIT_FUNC PyInit__emucore(void)
{
    return PyModuleDef_Init(&emu_module);
}
