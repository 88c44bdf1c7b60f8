/* authorize_node (authority, permissioned runs): give a key a slot it may join with. Authorizing a
 * key that already has a slot reuses it, and re-admits a revoked or slashed member. */
#include "eranos.h"

u64 ix_authorize_node(ctx_t *ctx) {
    authorize_node_args_t args;
    if (!parse_authorize_node(&ctx->data, &args)) return ERR_INVALID_INSTRUCTION;
    TRY(require_accounts(ctx, AUTHORIZE_NODE_ACCOUNTS));
    run_t *run;
    member_table_t *table;
    TRY(load_authority_run(ctx, AUTHORIZE_NODE_AUTHORITY, AUTHORIZE_NODE_RUN, &run));
    TRY(load_members(ctx, AUTHORIZE_NODE_MEMBERS, run, AUTHORIZE_NODE_RUN, &table));
    if (run->mode != MODE_PERMISSIONED) return ERR_WRONG_MODE;
    if (key_is_zero(&args.node)) return ERR_INVALID_ARGUMENT;
    slot_t slot = find_member(table, run->member_count, &args.node);
    if (slot < 0) {
        if (run->member_count >= MAX_MEMBERS) return ERR_TABLE_FULL;
        slot = run->member_count++;
        key_copy(&table->members[slot].key, &args.node);
    }
    member_t *m = &table->members[slot];
    if (m->status == STATUS_EMPTY || m->status == STATUS_REVOKED || m->status == STATUS_SLASHED)
        m->status = STATUS_AUTHORIZED;
    sol_log_64_(slot, m->status, 0, 0, 0);
    return 0;
}
