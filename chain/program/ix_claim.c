/* claim (member signs): mint `amount` of the member's unclaimed points as reward tokens to the
 * member's own token account of the run's mint, signing the Token program's MintTo as the Run
 * PDA (the mint's authority). */
#include "eranos.h"

#define TOKEN_MINT_TO 7

static u64 check_token_account(const account_t *acc, const run_t *run, const pubkey_t *node) {
    static const pubkey_t token_id = TOKEN_PROGRAM_ID;
    if (!key_eq(acc->owner, &token_id)) return ERR_WRONG_OWNER;
    if (acc->data_len != TOKEN_ACCOUNT_SIZE) return ERR_ACCOUNT_SIZE;
    if (!key_eq((const pubkey_t *)acc->data, &run->mint)) return ERR_WRONG_MINT;
    if (!key_eq((const pubkey_t *)(acc->data + 32), node)) return ERR_WRONG_TOKEN_OWNER;
    return 0;
}

static u64 mint_to(ctx_t *ctx, const run_t *run, u64 amount) {
    static const pubkey_t token_id = TOKEN_PROGRAM_ID;
    account_t *mint = &ctx->accounts[CLAIM_MINT];
    account_t *dest = &ctx->accounts[CLAIM_TOKEN_ACCOUNT];
    account_t *run_acc = &ctx->accounts[CLAIM_RUN];
    u8 data[9];
    data[0] = TOKEN_MINT_TO;
    put_le(data + 1, amount, 8);
    const account_meta_t metas[3] = {{mint->key, 1, 0}, {dest->key, 1, 0}, {run_acc->key, 0, 1}};
    const instruction_t ix = {&token_id, metas, 3, data, sizeof(data)};
    account_t *infos = (account_t *)(HEAP_START + 8192);
    infos[0] = *mint;
    infos[1] = *dest;
    infos[2] = *run_acc;
    seed_t seeds[4];
    run_seeds(seeds, &run->authority, &run->run_id, &run->bump);
    const signer_seeds_t signer = {seeds, 4};
    return sol_invoke_signed_c(&ix, infos, 3, &signer, 1);
}

u64 ix_claim(ctx_t *ctx) {
    static const pubkey_t token_id = TOKEN_PROGRAM_ID;
    claim_args_t args;
    if (!parse_claim(&ctx->data, &args)) return ERR_INVALID_INSTRUCTION;
    TRY(require_accounts(ctx, CLAIM_ACCOUNTS));
    const account_t *node = &ctx->accounts[CLAIM_NODE];
    run_t *run;
    member_table_t *table;
    TRY(require_program(&ctx->accounts[CLAIM_TOKEN_PROGRAM], &token_id));
    TRY(require_signer(node));
    TRY(load_run(ctx, CLAIM_RUN, 0, &run));
    TRY(load_members(ctx, CLAIM_MEMBERS, run, CLAIM_RUN, &table));
    TRY(require_writable(&ctx->accounts[CLAIM_MINT]));
    TRY(require_writable(&ctx->accounts[CLAIM_TOKEN_ACCOUNT]));
    if (!key_eq(ctx->accounts[CLAIM_MINT].key, &run->mint)) return ERR_WRONG_MINT;
    TRY(check_token_account(&ctx->accounts[CLAIM_TOKEN_ACCOUNT], run, node->key));
    slot_t slot = find_member(table, run->member_count, node->key);
    if (slot < 0) return ERR_NOT_MEMBER;
    member_t *m = &table->members[slot];
    if (!args.amount) return ERR_NOTHING_TO_CLAIM;
    if (args.amount > m->points_earned - m->points_claimed) return ERR_CLAIM_EXCEEDS_EARNED;
    m->points_claimed += args.amount;
    TRY(mint_to(ctx, run, args.amount));
    log_str("eranos: claimed");
    sol_log_64_(slot, args.amount, m->points_claimed, 0, 0);
    return 0;
}
