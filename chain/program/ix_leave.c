/* leave (node signs): stop being active and start the unbonding clock. Until it runs out the
 * member can still be credited or slashed for rounds it took part in. */
#include "eranos.h"

u64 ix_leave(ctx_t *ctx) {
    leave_args_t args;
    if (!parse_leave(&ctx->data, &args)) return ERR_INVALID_INSTRUCTION;
    TRY(require_accounts(ctx, LEAVE_ACCOUNTS));
    const account_t *node = &ctx->accounts[LEAVE_NODE];
    run_t *run;
    member_table_t *table;
    TRY(require_signer(node));
    TRY(load_run(ctx, LEAVE_RUN, 1, &run));
    TRY(load_members(ctx, LEAVE_MEMBERS, run, LEAVE_RUN, &table));
    TRY(settle_params(run));
    slot_t slot = find_member(table, run->member_count, node->key);
    if (slot < 0) return ERR_NOT_MEMBER;
    member_t *m = &table->members[slot];
    if (m->status != STATUS_ACTIVE) return ERR_NOT_ACTIVE;
    i64 now;
    TRY(now_unix(&now));
    m->status = STATUS_LEFT;
    run->active_count--;
    m->unbond_at = now + (i64)run->params.unbonding_seconds;
    log_str("eranos: left");
    sol_log_64_(slot, (u64)m->unbond_at, 0, 0, 0);
    return 0;
}
