/* Account checks in the order the style guide fixes: count, owner, signer, size, discriminator,
 * program address, state. Plus the clock, rent and system-transfer helpers they share. */
#include "eranos.h"

u64 require_accounts(const ctx_t *ctx, u64 n) { return ctx->n_accounts < n ? ERR_NOT_ENOUGH_ACCOUNTS : 0; }

u64 require_signer(const account_t *acc) { return acc->is_signer ? 0 : ERR_MISSING_SIGNER; }

u64 require_writable(const account_t *acc) { return acc->is_writable ? 0 : ERR_NOT_WRITABLE; }

u64 require_program(const account_t *acc, const pubkey_t *expected) {
    return key_eq(acc->key, expected) ? 0 : ERR_WRONG_PROGRAM;
}

/* The Run PDA's seeds: the prefix, the authority (so a run id belongs to whoever created it and
 * cannot be squatted by another key), the run id and, when signing or re-deriving, the bump. */
void run_seeds(seed_t seeds[4], const pubkey_t *authority, const u64 *run_id, const u8 *bump) {
    seeds[0] = (seed_t){(const u8 *)RUN_SEED, RUN_SEED_LEN};
    seeds[1] = (seed_t){authority->x, 32};
    seeds[2] = (seed_t){(const u8 *)run_id, 8};
    seeds[3] = (seed_t){bump, 1};
}

u64 run_address(const pubkey_t *program_id, const run_t *run, pubkey_t *out) {
    seed_t seeds[4];
    run_seeds(seeds, &run->authority, &run->run_id, &run->bump);
    return sol_create_program_address(seeds, 4, program_id, out) ? ERR_WRONG_PDA : 0;
}

u64 load_run(const ctx_t *ctx, u64 index, int writable, run_t **out) {
    const account_t *acc = &ctx->accounts[index];
    if (!key_eq(acc->owner, ctx->program_id)) return ERR_WRONG_OWNER;
    if (writable) TRY(require_writable(acc));
    if (acc->data_len != sizeof(run_t)) return ERR_ACCOUNT_SIZE;
    run_t *run = (run_t *)acc->data;
    if (run->discriminator != DISC_RUN) return ERR_BAD_DISCRIMINATOR;
    pubkey_t expected;
    TRY(run_address(ctx->program_id, run, &expected));
    if (!key_eq(&expected, acc->key)) return ERR_WRONG_PDA;
    *out = run;
    return 0;
}

u64 load_authority_run(const ctx_t *ctx, u64 authority_index, u64 run_index, run_t **out) {
    TRY(require_signer(&ctx->accounts[authority_index]));
    TRY(load_run(ctx, run_index, 1, out));
    return key_eq(&(*out)->authority, ctx->accounts[authority_index].key) ? 0 : ERR_UNAUTHORIZED;
}

u64 load_members(const ctx_t *ctx, u64 index, const run_t *run, u64 run_index, member_table_t **out) {
    const account_t *acc = &ctx->accounts[index];
    if (!key_eq(acc->owner, ctx->program_id)) return ERR_WRONG_OWNER;
    TRY(require_writable(acc));
    if (acc->data_len != sizeof(member_table_t)) return ERR_ACCOUNT_SIZE;
    member_table_t *table = (member_table_t *)acc->data;
    if (table->discriminator != DISC_MEMBER_TABLE) return ERR_BAD_DISCRIMINATOR;
    if (!key_eq(&run->members, acc->key) || !key_eq(&table->run, ctx->accounts[run_index].key))
        return ERR_WRONG_MEMBER_TABLE;
    *out = table;
    return 0;
}

slot_t find_member(const member_table_t *table, u32 count, const pubkey_t *key) {
    for (u32 i = 0; i < count; i++)
        if (key_eq(&table->members[i].key, key)) return i;
    return -1;
}

u64 now_unix(i64 *out) {
    clock_t clock;
    if (sol_get_clock_sysvar(&clock)) return ERR_INVALID_ARGUMENT;
    *out = clock.unix_timestamp;
    return 0;
}

u64 now_slot(u64 *out) {
    clock_t clock;
    if (sol_get_clock_sysvar(&clock)) return ERR_INVALID_ARGUMENT;
    *out = clock.slot;
    return 0;
}

u64 add_u64(u64 a, u64 b, u64 *out) { return __builtin_add_overflow(a, b, out) ? ERR_OVERFLOW : 0; }

u64 increment_u32(u32 *counter) {
    if (*counter == (u32)-1) return ERR_OVERFLOW;
    (*counter)++;
    return 0;
}

u64 check_params(const run_params_t *params, u8 mode) {
    if (params->points_per_contribution > MAX_POINTS_PER_BATCH) return ERR_INVALID_ARGUMENT;
    if (mode == MODE_PERMISSIONLESS && params->unbonding_seconds < MIN_UNBONDING_SECONDS)
        return ERR_INVALID_ARGUMENT;
    return params->unbonding_seconds > MAX_UNBONDING_SECONDS ? ERR_INVALID_ARGUMENT : 0;
}

/* update_run's params take effect once the notice (the unbonding period in force when they
 * were set) has passed; every instruction that reads the params settles them first. */
u64 settle_params(run_t *run) {
    if (!run->pending_at) return 0;
    i64 now;
    TRY(now_unix(&now));
    if (now < run->pending_at) return 0;
    run->params = run->pending;
    run->pending_at = 0;
    log_str("eranos: params in force");
    return 0;
}

/* The runtime's formula, (128 + size) * lamports_per_byte_year * threshold, without floating
 * point: the f64 threshold becomes 16.16 fixed point, exact for the 2.0 every cluster uses. BPF
 * has no 128-bit multiply (clang lowers overflow checks to one), so the inputs are bounded
 * instead: size < 2^24 (accounts max out at 10 MiB), rate < 2^16, threshold < 16, product < 2^60. */
u64 rent_exempt_minimum(u64 size, u64 *out) {
    rent_t rent;
    if (sol_get_rent_sysvar(&rent)) return ERR_INVALID_ARGUMENT;
    u64 bits = rent.exemption_threshold_f64_bits;
    i64 exponent = (i64)((bits >> 52) & 0x7ff) - 1023;
    u64 mantissa = (bits & ((1UL << 52) - 1)) | (1UL << 52);
    if (bits >> 63 || exponent < -16 || exponent > 3) return ERR_INVALID_ARGUMENT;
    if (size >= 1UL << 24 || rent.lamports_per_byte_year >= 1UL << 16) return ERR_INVALID_ARGUMENT;
    u64 threshold_fx16 = mantissa >> (36 - exponent);
    *out = (128 + size) * rent.lamports_per_byte_year * threshold_fx16 >> 16;
    return 0;
}

u64 system_transfer(account_t *from, account_t *to, u64 lamports, const signer_seeds_t *signer) {
    static const pubkey_t system_id = SYSTEM_PROGRAM_ID;
    u8 data[12];
    put_le(data, 2, 4);
    put_le(data + 4, lamports, 8);
    const account_meta_t metas[2] = {{from->key, 1, 1}, {to->key, 1, 0}};
    const instruction_t ix = {&system_id, metas, 2, data, sizeof(data)};
    account_t infos[2] = {*from, *to};
    return sol_invoke_signed_c(&ix, infos, 2, signer, signer ? 1 : 0);
}
