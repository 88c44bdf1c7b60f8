/* join (node signs): become active. Permissioned runs need a slot from authorize_node (or a
 * slot left earlier); permissionless runs append a slot and take the required stake, topping up
 * what an earlier slash took. Re-joining reuses the key's slot. */
#include "eranos.h"

static u64 deposit_stake(ctx_t *ctx, run_t *run, member_t *m) {
    if (m->stake >= run->params.required_stake) return 0;
    u64 top_up = run->params.required_stake - m->stake;
    account_t *node = &ctx->accounts[JOIN_NODE];
    if (*node->lamports < top_up) return ERR_INSUFFICIENT_STAKE;
    TRY(system_transfer(node, &ctx->accounts[JOIN_RUN], top_up, 0));
    m->stake += top_up;
    return add_u64(run->total_staked, top_up, &run->total_staked);
}

u64 ix_join(ctx_t *ctx) {
    static const pubkey_t system_id = SYSTEM_PROGRAM_ID;
    join_args_t args;
    if (!parse_join(&ctx->data, &args)) return ERR_INVALID_INSTRUCTION;
    TRY(require_accounts(ctx, JOIN_ACCOUNTS));
    const account_t *node = &ctx->accounts[JOIN_NODE];
    run_t *run;
    member_table_t *table;
    TRY(require_program(&ctx->accounts[JOIN_SYSTEM_PROGRAM], &system_id));
    TRY(require_signer(node));
    TRY(require_writable(node));
    TRY(load_run(ctx, JOIN_RUN, 1, &run));
    TRY(load_members(ctx, JOIN_MEMBERS, run, JOIN_RUN, &table));
    TRY(settle_params(run));
    if (run->paused) return ERR_RUN_PAUSED;
    slot_t slot = find_member(table, run->member_count, node->key);
    if (run->mode == MODE_PERMISSIONED) {
        u8 status = slot < 0 ? STATUS_EMPTY : table->members[slot].status;
        if (status == STATUS_ACTIVE) return ERR_ALREADY_ACTIVE;
        if (status != STATUS_AUTHORIZED && status != STATUS_LEFT) return ERR_NOT_AUTHORIZED;
    } else {
        if (slot >= 0 && table->members[slot].status == STATUS_ACTIVE) return ERR_ALREADY_ACTIVE;
        if (slot < 0) {
            if (run->member_count >= MAX_MEMBERS) return ERR_TABLE_FULL;
            slot = run->member_count++;
            key_copy(&table->members[slot].key, node->key);
        }
        TRY(deposit_stake(ctx, run, &table->members[slot]));
    }
    member_t *m = &table->members[slot];
    m->status = STATUS_ACTIVE;
    m->joined_round = run->rounds_recorded ? run->last_round + 1 : 0;
    m->unbond_at = 0;
    run->active_count++;
    log_str("eranos: joined");
    sol_log_64_(slot, m->joined_round, m->stake, 0, 0);
    return 0;
}
