/* The little of the Solana runtime this program needs: types, syscalls, the input parser's
 * account view, and a bounds-checked reader for instruction data.
 *
 * Syscalls are plain extern functions; the loader binds each by the murmur3 hash of its name.
 * Solana programs have no writable globals, so scratch space comes from the 32 KiB heap. */
#pragma once

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long u64;
typedef long i64;

_Static_assert(sizeof(u64) == 8, "u64");

typedef struct {
    u8 x[32];
} pubkey_t;

/* Same layout as the runtime's SolAccountInfo, so arrays of these go straight into a CPI. */
typedef struct {
    pubkey_t *key;
    u64 *lamports;
    u64 data_len;
    u8 *data;
    pubkey_t *owner;
    u64 rent_epoch;
    u8 is_signer;
    u8 is_writable;
    u8 executable;
} account_t;

typedef struct {
    const pubkey_t *pubkey;
    u8 is_writable;
    u8 is_signer;
} account_meta_t;

typedef struct {
    const pubkey_t *program_id;
    const account_meta_t *accounts;
    u64 account_len;
    const u8 *data;
    u64 data_len;
} instruction_t;

typedef struct {
    const u8 *addr;
    u64 len;
} seed_t;

typedef struct {
    const seed_t *addr;
    u64 len;
} signer_seeds_t;

typedef struct {
    u64 slot;
    i64 epoch_start_timestamp;
    u64 epoch;
    u64 leader_schedule_epoch;
    i64 unix_timestamp;
} clock_t;

typedef struct {
    u64 lamports_per_byte_year;
    u64 exemption_threshold_f64_bits;
    u8 burn_percent;
} rent_t;

extern void sol_log_(const char *msg, u64 len);
extern void sol_log_64_(u64, u64, u64, u64, u64);
extern u64 sol_create_program_address(const seed_t *seeds, u64 n, const pubkey_t *program, pubkey_t *out);
extern u64 sol_try_find_program_address(const seed_t *seeds, u64 n, const pubkey_t *program, pubkey_t *out,
                                        u8 *bump);
extern u64 sol_invoke_signed_c(const instruction_t *ix, const account_t *infos, int n_infos,
                               const signer_seeds_t *seeds, int n_seeds);
extern u64 sol_get_clock_sysvar(clock_t *out);
extern u64 sol_get_rent_sysvar(rent_t *out);
extern void sol_memcpy_(void *dst, const void *src, u64 n);
extern void sol_memset_(void *dst, u8 value, u64 n);

#define HEAP_START ((u8 *)0x300000000UL)
#define MAX_ACCOUNTS 8
#define NON_DUP 0xff
#define MAX_PERMITTED_DATA_INCREASE 10240

static inline u64 str_len(const char *s) {
    u64 n = 0;
    while (s[n]) n++;
    return n;
}

static inline void log_str(const char *s) { sol_log_(s, str_len(s)); }

static inline int key_eq(const pubkey_t *a, const pubkey_t *b) {
    const u64 *x = (const u64 *)a->x, *y = (const u64 *)b->x;
    return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3];
}

static inline int words_eq(const void *a, const void *b, u64 n_words) {
    const u64 *x = a, *y = b;
    for (u64 i = 0; i < n_words; i++)
        if (x[i] != y[i]) return 0;
    return 1;
}

static inline int key_is_zero(const pubkey_t *a) {
    const u64 *x = (const u64 *)a->x;
    return (x[0] | x[1] | x[2] | x[3]) == 0;
}

static inline void key_copy(pubkey_t *dst, const pubkey_t *src) {
    u64 *d = (u64 *)dst->x;
    const u64 *s = (const u64 *)src->x;
    d[0] = s[0], d[1] = s[1], d[2] = s[2], d[3] = s[3];
}

static inline void put_le(u8 *dst, u64 v, u64 n) {
    for (u64 i = 0; i < n; i++) dst[i] = (u8)(v >> (8 * i));
}

/* Reads little-endian borsh values out of instruction data; after the first short read every
 * later read yields zero and rd_done reports failure, so parsers need no per-field checks. */
typedef struct {
    const u8 *p;
    u64 left;
    int ok;
} reader_t;

typedef struct {
    const u8 *ptr;
    u32 len;
} bytes_t;

static inline const u8 *rd_take(reader_t *r, u64 n) {
    if (!r->ok || r->left < n) {
        r->ok = 0;
        return 0;
    }
    const u8 *p = r->p;
    r->p += n;
    r->left -= n;
    return p;
}

static inline u64 rd_le(reader_t *r, u64 n) {
    const u8 *p = rd_take(r, n);
    u64 v = 0;
    for (u64 i = 0; p && i < n; i++) v |= (u64)p[i] << (8 * i);
    return v;
}

static inline u8 rd_u8(reader_t *r) { return (u8)rd_le(r, 1); }
static inline u16 rd_u16(reader_t *r) { return (u16)rd_le(r, 2); }
static inline u32 rd_u32(reader_t *r) { return (u32)rd_le(r, 4); }
static inline u64 rd_u64(reader_t *r) { return rd_le(r, 8); }
static inline i64 rd_i64(reader_t *r) { return (i64)rd_le(r, 8); }

static inline u8 rd_bool(reader_t *r) {
    u8 v = rd_u8(r);
    if (v > 1) r->ok = 0;
    return v;
}

static inline void rd_copy(reader_t *r, void *dst, u64 n) {
    const u8 *p = rd_take(r, n);
    if (p) sol_memcpy_(dst, p, n);
}

static inline void rd_vec(reader_t *r, bytes_t *out) {
    u32 n = rd_u32(r);
    out->ptr = rd_take(r, n);
    out->len = out->ptr ? n : 0;
}

static inline int rd_done(const reader_t *r) { return r->ok && r->left == 0; }
