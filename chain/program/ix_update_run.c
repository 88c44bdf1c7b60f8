/* update_run (authority): replace the rates, stake, slash amount and unbonding period; pause or
 * resume. The mode is fixed at initialization: flipping it would change what existing members'
 * stakes and authorizations mean. */
#include "eranos.h"

u64 ix_update_run(ctx_t *ctx) {
    update_run_args_t args;
    if (!parse_update_run(&ctx->data, &args)) return ERR_INVALID_INSTRUCTION;
    TRY(require_accounts(ctx, UPDATE_RUN_ACCOUNTS));
    run_t *run;
    TRY(load_authority_run(ctx, UPDATE_RUN_AUTHORITY, UPDATE_RUN_RUN, &run));
    TRY(check_params(&args.params));
    run->params = args.params;
    run->paused = args.paused;
    log_str(args.paused ? "eranos: run updated, paused" : "eranos: run updated");
    return 0;
}
