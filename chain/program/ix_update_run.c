/* update_run (authority): pause or resume at once; new rates, stake, slash amount and unbonding
 * period take effect only after the notice the members were promised (the unbonding period in
 * force now), so nobody's stake or slash changes under them: members who disagree have time to
 * leave and withdraw. Each change is logged. The mode is fixed at initialization: flipping it
 * would change what existing members' stakes and authorizations mean. */
#include "eranos.h"

u64 ix_update_run(ctx_t *ctx) {
    update_run_args_t args;
    if (!parse_update_run(&ctx->data, &args)) return ERR_INVALID_INSTRUCTION;
    TRY(require_accounts(ctx, UPDATE_RUN_ACCOUNTS));
    run_t *run;
    TRY(load_authority_run(ctx, UPDATE_RUN_AUTHORITY, UPDATE_RUN_RUN, &run));
    TRY(check_params(&args.params, run->mode));
    TRY(settle_params(run));
    if (!words_eq(&args.params, &run->params, sizeof(run_params_t) / 8)) {
        i64 now;
        TRY(now_unix(&now));
        run->pending = args.params;
        run->pending_at = now + (i64)run->params.unbonding_seconds;
        if (run->pending_at == 0) run->pending_at = 1; /* 0 means nothing pending */
        log_str("eranos: params pending");
        sol_log_64_(run->pending_at, args.params.points_per_contribution, args.params.points_per_validation,
                    args.params.required_stake, args.params.slash_amount);
        TRY(settle_params(run)); /* in force at once when there is no notice to give */
    } else {
        run->pending_at = 0;
    }
    run->paused = args.paused;
    log_str(args.paused ? "eranos: run updated, paused" : "eranos: run updated");
    return 0;
}
