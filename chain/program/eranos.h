/* Shared by the instruction files: the parsed call, the account checks, and the CPI helpers.
 * Every check returns 0 or an error code from eranos_gen.h; TRY passes a failure up unchanged. */
#pragma once
#include "eranos_gen.h"

#define TRY(expr)                  \
    do {                           \
        u64 err_ = (expr);         \
        if (err_) return err_;     \
    } while (0)

typedef struct {
    account_t *accounts; /* on the heap: no frame has room for MAX_ACCOUNTS of them */
    u64 n_accounts;
    reader_t data;       /* instruction data after the 8-byte discriminator */
    const pubkey_t *program_id;
} ctx_t;

/* The member table's slot of a key, or -1. */
typedef i64 slot_t;

u64 require_accounts(const ctx_t *ctx, u64 n);
u64 require_signer(const account_t *acc);
u64 require_writable(const account_t *acc);
u64 require_program(const account_t *acc, const pubkey_t *expected);
u64 load_run(const ctx_t *ctx, u64 index, int writable, run_t **out);
u64 load_authority_run(const ctx_t *ctx, u64 authority_index, u64 run_index, run_t **out);
u64 load_members(const ctx_t *ctx, u64 index, const run_t *run, u64 run_index, member_table_t **out);
void run_seeds(seed_t seeds[4], const pubkey_t *authority, const u64 *run_id, const u8 *bump);
u64 run_address(const pubkey_t *program_id, const run_t *run, pubkey_t *out);
slot_t find_member(const member_table_t *table, u32 count, const pubkey_t *key);
u64 now_unix(i64 *out);
u64 now_slot(u64 *out);
u64 rent_exempt_minimum(u64 size, u64 *out);
u64 system_transfer(account_t *from, account_t *to, u64 lamports, const signer_seeds_t *signer);
u64 add_u64(u64 a, u64 b, u64 *out);
u64 increment_u32(u32 *counter);
u64 check_params(const run_params_t *params, u8 mode);
u64 settle_params(run_t *run);

u64 ix_initialize_run(ctx_t *ctx);
u64 ix_update_run(ctx_t *ctx);
u64 ix_authorize_node(ctx_t *ctx);
u64 ix_revoke_node(ctx_t *ctx);
u64 ix_join(ctx_t *ctx);
u64 ix_record_round(ctx_t *ctx);
u64 ix_claim(ctx_t *ctx);
u64 ix_leave(ctx_t *ctx);
u64 ix_withdraw_stake(ctx_t *ctx);
