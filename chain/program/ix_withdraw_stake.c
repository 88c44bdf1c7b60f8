/* withdraw_stake (node signs): once unbonded, move what remains of the stake from the Run
 * account back to the node. The program owns the Run account, so it debits it directly. */
#include "eranos.h"

u64 ix_withdraw_stake(ctx_t *ctx) {
    withdraw_stake_args_t args;
    if (!parse_withdraw_stake(&ctx->data, &args)) return ERR_INVALID_INSTRUCTION;
    TRY(require_accounts(ctx, WITHDRAW_STAKE_ACCOUNTS));
    account_t *node = &ctx->accounts[WITHDRAW_STAKE_NODE];
    account_t *run_acc = &ctx->accounts[WITHDRAW_STAKE_RUN];
    run_t *run;
    member_table_t *table;
    TRY(require_signer(node));
    TRY(require_writable(node));
    TRY(load_run(ctx, WITHDRAW_STAKE_RUN, 1, &run));
    TRY(load_members(ctx, WITHDRAW_STAKE_MEMBERS, run, WITHDRAW_STAKE_RUN, &table));
    slot_t slot = find_member(table, run->member_count, node->key);
    if (slot < 0) return ERR_NOT_MEMBER;
    member_t *m = &table->members[slot];
    if (m->status == STATUS_ACTIVE) return ERR_STILL_ACTIVE;
    i64 now;
    TRY(now_unix(&now));
    if (now < m->unbond_at) return ERR_STILL_UNBONDING;
    if (!m->stake) return ERR_NOTHING_TO_WITHDRAW;
    u64 amount = m->stake;
    if (*run_acc->lamports < amount || run->total_staked < amount) return ERR_OVERFLOW;
    TRY(add_u64(*node->lamports, amount, node->lamports));
    *run_acc->lamports -= amount;
    run->total_staked -= amount;
    m->stake = 0;
    log_str("eranos: stake withdrawn");
    sol_log_64_(slot, amount, 0, 0, 0);
    return 0;
}
