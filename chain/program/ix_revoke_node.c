/* revoke_node (authority, permissioned runs): the key may no longer join or stay active. Points
 * already earned stay claimable. */
#include "eranos.h"

u64 ix_revoke_node(ctx_t *ctx) {
    revoke_node_args_t args;
    if (!parse_revoke_node(&ctx->data, &args)) return ERR_INVALID_INSTRUCTION;
    TRY(require_accounts(ctx, REVOKE_NODE_ACCOUNTS));
    run_t *run;
    member_table_t *table;
    TRY(load_authority_run(ctx, REVOKE_NODE_AUTHORITY, REVOKE_NODE_RUN, &run));
    TRY(load_members(ctx, REVOKE_NODE_MEMBERS, run, REVOKE_NODE_RUN, &table));
    if (run->mode != MODE_PERMISSIONED) return ERR_WRONG_MODE;
    slot_t slot = find_member(table, run->member_count, &args.node);
    if (slot < 0) return ERR_NOT_MEMBER;
    member_t *m = &table->members[slot];
    if (m->status == STATUS_ACTIVE) run->active_count--;
    m->status = STATUS_REVOKED;
    sol_log_64_(slot, m->status, 0, 0, 0);
    return 0;
}
