/*
 * emucore_stream.h - the on-wire format written and read by emucore.
 *
 * One header for the whole stream format, so that the C code, the Python
 * constants (nova_xen_stubdom/emucore/format.py) and the documentation
 * (doc/source/emucore.rst) have a single place to agree with.
 *
 * Spec records come from Xen's docs/specs/libxl-migration-stream.pandoc
 * (libxl "LibxlFmt" v2) and docs/specs/libxc-migration-stream.pandoc
 * (libxc "XENF" v3).  Every spec structure is little endian except the two
 * image headers, which are big endian ("network order") by the spec.
 * Records are an 8-byte header {type, length} followed by `length` bytes of
 * body and zero padding up to a multiple of 8.
 *
 * Our additions are *optional* records (type bit 31 set, as both specs
 * reserve for optional records).  They all carry the "NX" marker 0x4e in
 * bits 8..15 of the type so that they cannot be confused with a future
 * upstream optional record.  A compatible-mode stream contains none of them.
 */
#ifndef EMUCORE_STREAM_H
#define EMUCORE_STREAM_H

#include <stdint.h>

#define EMU_PAGE_SHIFT 12
#define EMU_PAGE_SIZE  (1u << EMU_PAGE_SHIFT)

/* Upper bound on pages per PAGE_DATA / ZERO_RUNS / XBZRLE record.  libxc
 * uses batches of 1024 pages (MAX_BATCH_SIZE); the reader refuses more so a
 * hostile count can never make it allocate or walk unbounded memory. */
#define EMU_MAX_BATCH 1024u

/* ---- libxl layer ------------------------------------------------------ */

/* Header, big endian: ident "LibxlFmt", version, options (16 bytes). */
struct emu_libxl_hdr {
    uint64_t ident;            /* 0x4c6962786c466d74 "LibxlFmt" (BE) */
    uint32_t version;          /* 2 (BE) */
    uint32_t options;          /* bit 0: big endian, bit 1: legacy (BE) */
};
#define EMU_LIBXL_IDENT   0x4c6962786c466d74ULL
#define EMU_LIBXL_VERSION 2u

#define EMU_LIBXL_REC_END                    0x00000000u
#define EMU_LIBXL_REC_LIBXC_CONTEXT          0x00000001u
#define EMU_LIBXL_REC_EMULATOR_XENSTORE_DATA 0x00000002u
#define EMU_LIBXL_REC_EMULATOR_CONTEXT       0x00000003u
#define EMU_LIBXL_REC_CHECKPOINT_END         0x00000004u
#define EMU_LIBXL_REC_CHECKPOINT_STATE       0x00000005u

/* Body head of EMULATOR_XENSTORE_DATA and EMULATOR_CONTEXT. */
struct emu_emulator_hdr {
    uint32_t id;               /* 0 unknown, 1 qemu-traditional, 2 qemu-upstream */
    uint32_t index;
};

/* ---- libxc layer ------------------------------------------------------ */

/* Image header, big endian. */
struct emu_libxc_ihdr {
    uint64_t marker;           /* 0xffffffffffffffff */
    uint32_t id;               /* 0x58454e46 "XENF" */
    uint32_t version;          /* 3 */
    uint16_t options;          /* bit 0: big endian */
    uint16_t res1;
    uint32_t res2;
};
#define EMU_LIBXC_MARKER  0xffffffffffffffffULL
#define EMU_LIBXC_IDENT   0x58454e46u
#define EMU_LIBXC_VERSION 3u

/* Domain header, little endian. */
struct emu_libxc_dhdr {
    uint32_t type;             /* 2 = x86 HVM */
    uint16_t page_shift;       /* 12 */
    uint16_t res1;
    uint32_t xen_major;
    uint32_t xen_minor;
};
#define EMU_DHDR_TYPE_X86_PV  1u
#define EMU_DHDR_TYPE_X86_HVM 2u
#define EMU_DHDR_TYPE_X86_PVH 3u
#define EMU_DHDR_TYPE_ARM     4u

struct emu_rec_hdr {
    uint32_t type;
    uint32_t length;           /* body length, excluding padding */
};

#define EMU_REC_OPTIONAL 0x80000000u

#define EMU_LIBXC_REC_END              0x00000000u
#define EMU_LIBXC_REC_PAGE_DATA        0x00000001u
#define EMU_LIBXC_REC_X86_TSC_INFO     0x00000008u
#define EMU_LIBXC_REC_HVM_CONTEXT      0x00000009u
#define EMU_LIBXC_REC_HVM_PARAMS       0x0000000au
#define EMU_LIBXC_REC_STATIC_DATA_END  0x00000010u
#define EMU_LIBXC_REC_X86_CPUID_POLICY 0x00000011u
#define EMU_LIBXC_REC_X86_MSR_POLICY   0x00000012u

/* PAGE_DATA body: this head, count pfn words, then one page per pfn word
 * whose type carries data (types 0-4 and pinned 9-12). */
struct emu_page_data_hdr {
    uint32_t count;
    uint32_t res;
};
#define EMU_PFN_MASK        ((1ULL << 52) - 1)
#define EMU_PFN_RES_MASK    (((1ULL << 60) - 1) & ~EMU_PFN_MASK)
#define EMU_PFN_TYPE_SHIFT  60
#define EMU_PFN_TYPE_NOTAB  0x0u
#define EMU_PFN_TYPE_BROKEN 0xdu
#define EMU_PFN_TYPE_XALLOC 0xeu
#define EMU_PFN_TYPE_XTAB   0xfu

struct emu_hvm_params_hdr { uint32_t count; uint32_t res; };
struct emu_hvm_param { uint64_t index; uint64_t value; };
struct emu_tsc_info {
    uint32_t mode;
    uint32_t khz;
    uint64_t nsec;
    uint32_t incarnation;
    uint32_t res;
};
/* X86_CPUID_POLICY body: an array of xen_cpuid_leaf_t, X86_MSR_POLICY body:
 * an array of xen_msr_entry_t (xen/include/public/arch-x86/xen.h), as
 * xc_cpu_policy_serialise fills them; both non-empty and a whole number of
 * entries (xg_sr_common_x86.c handle_x86_cpuid_policy / _msr_policy). */
#define EMU_CPUID_NO_SUBLEAF 0xffffffffu
struct emu_cpuid_leaf {
    uint32_t leaf, subleaf;
    uint32_t a, b, c, d;
};
struct emu_msr_entry {
    uint32_t idx;
    uint32_t flags;            /* 0 */
    uint64_t val;
};

/* ---- our optional records (type bit 31, "NX" marker) ------------------ */

/* libxc layer, inside a page batch. */
/* Zero pages as runs: head {count, res} then count x {start_pfn, npages}.
 * Runs are non-empty, at most EMU_MAX_BATCH pages in one record. */
#define EMU_REC_ZERO_RUNS    0x80004e01u
struct emu_zero_run { uint64_t start_pfn; uint64_t npages; };

/* XBZRLE deltas against the page the receiver already holds (the one last
 * sent for that pfn): head {count, res}, count x uint64 pfn, count x uint16
 * encoded length, zero padding to 8, then the encodings back to back.
 * Length 0 means "unchanged since last sent".  The encoding is QEMU's
 * (docs/xbzrle.txt): zrun nzrun pairs, ULEB128 lengths (max 2 bytes), the
 * nzrun carries the new bytes, a trailing zrun is omitted. */
#define EMU_REC_XBZRLE_PAGES 0x80004e02u

/* CRC32C (Castagnoli, as iSCSI) over the exact bytes (headers, bodies,
 * padding) of the records of this batch written before it: {crc, covered}. */
#define EMU_REC_BATCH_CRC32C 0x80004e03u
struct emu_batch_crc { uint32_t crc; uint32_t covered; };

/* Either layer. */
/* First record after the libxl header when the stream is authenticated:
 * {alg = 1 (HMAC-SHA256), flags = 0, stream_id[16]}. */
#define EMU_REC_AUTH_INIT    0x80004e10u
struct emu_auth_init { uint32_t alg; uint32_t flags; uint8_t stream_id[16]; };
#define EMU_AUTH_ALG_HMAC_SHA256 1u

/* Running MAC: HMAC-SHA256(key) over every byte of the stream from offset
 * 0, where each AUTH_TAG record contributes its header, seq and flags but
 * not its mac.  The tag in record n authenticates the whole prefix.
 * flags bit 0 = FINAL: the next record must be the libxl END. */
#define EMU_REC_AUTH_TAG     0x80004e11u
struct emu_auth_tag { uint32_t seq; uint32_t flags; uint8_t mac[32]; };
#define EMU_AUTH_TAG_FINAL 1u

/* libxc layer, before STATIC_DATA_END: the domain being moved, as a UTF-8
 * JSON object (e.g. {"vm_uuid", "max_pfn", "vcpus", "hvm", "memory_bytes"})
 * so a receiver can refuse a foreign image or prepare a domain of the right
 * size before any page arrives.  At most one per stream, EMU_DOMAIN_INFO_MAX
 * bytes. */
#define EMU_REC_DOMAIN_INFO  0x80004e20u
#define EMU_DOMAIN_INFO_MAX  65536u

#define EMU_STATIC_ASSERT(c, m) _Static_assert(c, m)
EMU_STATIC_ASSERT(sizeof(struct emu_libxl_hdr) == 16, "libxl header is 16 bytes");
EMU_STATIC_ASSERT(sizeof(struct emu_libxc_ihdr) == 24, "image header is 24 bytes");
EMU_STATIC_ASSERT(sizeof(struct emu_libxc_dhdr) == 16, "domain header is 16 bytes");
EMU_STATIC_ASSERT(sizeof(struct emu_rec_hdr) == 8, "record header is 8 bytes");
EMU_STATIC_ASSERT(sizeof(struct emu_page_data_hdr) == 8, "page data head is 8 bytes");
EMU_STATIC_ASSERT(sizeof(struct emu_hvm_param) == 16, "hvm param entry is 16 bytes");
EMU_STATIC_ASSERT(sizeof(struct emu_tsc_info) == 24, "tsc info is 24 bytes");
EMU_STATIC_ASSERT(sizeof(struct emu_cpuid_leaf) == 24, "cpuid leaf is 24 bytes");
EMU_STATIC_ASSERT(sizeof(struct emu_msr_entry) == 16, "msr entry is 16 bytes");
EMU_STATIC_ASSERT(sizeof(struct emu_emulator_hdr) == 8, "emulator head is 8 bytes");
EMU_STATIC_ASSERT(sizeof(struct emu_zero_run) == 16, "zero run is 16 bytes");
EMU_STATIC_ASSERT(sizeof(struct emu_batch_crc) == 8, "crc record is 8 bytes");
EMU_STATIC_ASSERT(sizeof(struct emu_auth_init) == 24, "auth init is 24 bytes");
EMU_STATIC_ASSERT(sizeof(struct emu_auth_tag) == 40, "auth tag is 40 bytes");

#endif /* EMUCORE_STREAM_H */
