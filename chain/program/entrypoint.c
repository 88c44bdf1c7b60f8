/* Parse the loader's input, reject duplicated accounts, and dispatch on the discriminator. */
#include "eranos.h"

/* The aligned loader serialization: u64 account count; per account a dup marker (0xff when not a
 * duplicate), flags, key, owner, lamports, data with 10 KiB of realloc room, rent epoch; then the
 * instruction data and the program id. */
static u64 parse_input(const u8 *input, ctx_t *ctx) {
    u64 n = *(const u64 *)input;
    const u8 *p = input + 8;
    int duplicate = 0;
    ctx->accounts = (account_t *)HEAP_START;
    ctx->n_accounts = n < MAX_ACCOUNTS ? n : MAX_ACCOUNTS;
    for (u64 i = 0; i < n; i++) {
        if (p[0] != NON_DUP) {
            duplicate |= i < MAX_ACCOUNTS;
            p += 8;
            continue;
        }
        account_t *a = i < MAX_ACCOUNTS ? &ctx->accounts[i] : (account_t *)(HEAP_START + 4096);
        a->is_signer = p[1];
        a->is_writable = p[2];
        a->executable = p[3];
        p += 8;
        a->key = (pubkey_t *)p;
        a->owner = (pubkey_t *)(p + 32);
        a->lamports = (u64 *)(p + 64);
        a->data_len = *(const u64 *)(p + 72);
        a->data = (u8 *)(p + 80);
        p += 80 + a->data_len + MAX_PERMITTED_DATA_INCREASE;
        p += -(u64)p & 7;
        a->rent_epoch = *(const u64 *)p;
        p += 8;
    }
    u64 data_len = *(const u64 *)p;
    ctx->data = (reader_t){p + 8, data_len, 1};
    ctx->program_id = (const pubkey_t *)(p + 8 + data_len);
    return duplicate ? ERR_DUPLICATE_ACCOUNT : 0;
}

static u64 dispatch(ctx_t *ctx) {
    u64 tag = rd_u64(&ctx->data);
    if (!ctx->data.ok) return ERR_INVALID_INSTRUCTION;
    switch (tag) {
    case IX_INITIALIZE_RUN: return ix_initialize_run(ctx);
    case IX_UPDATE_RUN: return ix_update_run(ctx);
    case IX_AUTHORIZE_NODE: return ix_authorize_node(ctx);
    case IX_REVOKE_NODE: return ix_revoke_node(ctx);
    case IX_JOIN: return ix_join(ctx);
    case IX_RECORD_ROUND: return ix_record_round(ctx);
    case IX_CLAIM: return ix_claim(ctx);
    case IX_LEAVE: return ix_leave(ctx);
    case IX_WITHDRAW_STAKE: return ix_withdraw_stake(ctx);
    default: return ERR_INVALID_INSTRUCTION;
    }
}

u64 entrypoint(const u8 *input) {
    ctx_t ctx;
    u64 err = parse_input(input, &ctx);
    if (!err) err = dispatch(&ctx);
    if (err) log_str(error_message(err));
    return err;
}
