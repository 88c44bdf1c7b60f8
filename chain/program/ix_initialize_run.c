/* initialize_run: create the Run PDA, stamp the client-allocated member table, bind the mint.
 *
 * The member table (90 KB) is past the 10 KiB a CPI may allocate, so the client creates it with
 * SystemProgram.createAccount owned by this program; here it must still be all zeros. The Run
 * PDA may already hold lamports (anyone can send some to the address to block a plain
 * createAccount), so it is funded up to rent exemption, then allocated and assigned. */
#include "eranos.h"

static u64 system_call(account_t *acc, const u8 *data, u64 len, const signer_seeds_t *signer) {
    static const pubkey_t system_id = SYSTEM_PROGRAM_ID;
    const account_meta_t meta = {acc->key, 1, 1};
    const instruction_t ix = {&system_id, &meta, 1, data, len};
    return sol_invoke_signed_c(&ix, acc, 1, signer, 1);
}

static u64 create_run_account(ctx_t *ctx, u64 run_id, u8 bump) {
    account_t *payer = &ctx->accounts[INITIALIZE_RUN_AUTHORITY];
    account_t *run = &ctx->accounts[INITIALIZE_RUN_RUN];
    seed_t seeds[4];
    run_seeds(seeds, payer->key, &run_id, &bump);
    const signer_seeds_t signer = {seeds, 4};
    u64 needed;
    TRY(rent_exempt_minimum(sizeof(run_t), &needed));
    if (*run->lamports < needed) TRY(system_transfer(payer, run, needed - *run->lamports, 0));
    u8 allocate[12];
    put_le(allocate, 8, 4);
    put_le(allocate + 4, sizeof(run_t), 8);
    TRY(system_call(run, allocate, sizeof(allocate), &signer));
    u8 assign[36];
    put_le(assign, 1, 4);
    sol_memcpy_(assign + 4, ctx->program_id, 32);
    return system_call(run, assign, sizeof(assign), &signer);
}

static u64 check_mint(const account_t *mint, const pubkey_t *run_key) {
    static const pubkey_t token_id = TOKEN_PROGRAM_ID;
    if (!key_eq(mint->owner, &token_id)) return ERR_WRONG_OWNER;
    if (mint->data_len != MINT_SIZE) return ERR_ACCOUNT_SIZE;
    const u8 *d = mint->data;
    u32 has_authority = d[0] | d[1] << 8 | d[2] << 16 | (u32)d[3] << 24;
    if (!d[45] || has_authority != 1 || !key_eq((const pubkey_t *)(d + 4), run_key)) return ERR_WRONG_MINT;
    return 0;
}

u64 ix_initialize_run(ctx_t *ctx) {
    static const pubkey_t system_id = SYSTEM_PROGRAM_ID;
    initialize_run_args_t args;
    if (!parse_initialize_run(&ctx->data, &args)) return ERR_INVALID_INSTRUCTION;
    TRY(require_accounts(ctx, INITIALIZE_RUN_ACCOUNTS));
    account_t *authority = &ctx->accounts[INITIALIZE_RUN_AUTHORITY];
    account_t *run_acc = &ctx->accounts[INITIALIZE_RUN_RUN];
    account_t *table_acc = &ctx->accounts[INITIALIZE_RUN_MEMBERS];
    TRY(require_program(&ctx->accounts[INITIALIZE_RUN_SYSTEM_PROGRAM], &system_id));
    TRY(require_signer(authority));
    TRY(require_writable(authority));
    TRY(require_writable(run_acc));
    TRY(require_writable(table_acc));
    if (!key_eq(run_acc->owner, &system_id) || run_acc->data_len) return ERR_ALREADY_INITIALIZED;
    if (!key_eq(table_acc->owner, ctx->program_id)) return ERR_WRONG_OWNER;
    if (table_acc->data_len != sizeof(member_table_t)) return ERR_ACCOUNT_SIZE;
    member_table_t *table = (member_table_t *)table_acc->data;
    if (table->discriminator || !key_is_zero(&table->run)) return ERR_ALREADY_INITIALIZED;
    if (args.mode != MODE_PERMISSIONED && args.mode != MODE_PERMISSIONLESS) return ERR_INVALID_MODE;
    TRY(check_params(&args.params, args.mode));

    seed_t seeds[4];
    u8 bump;
    run_seeds(seeds, authority->key, &args.run_id, &bump);
    pubkey_t expected;
    if (sol_try_find_program_address(seeds, 3, ctx->program_id, &expected, &bump)) return ERR_WRONG_PDA;
    if (!key_eq(&expected, run_acc->key)) return ERR_WRONG_PDA;
    TRY(check_mint(&ctx->accounts[INITIALIZE_RUN_MINT], run_acc->key));
    TRY(create_run_account(ctx, args.run_id, bump));

    run_t *run = (run_t *)run_acc->data;
    run->discriminator = DISC_RUN;
    run->run_id = args.run_id;
    key_copy(&run->authority, authority->key);
    key_copy(&run->mint, ctx->accounts[INITIALIZE_RUN_MINT].key);
    key_copy(&run->members, table_acc->key);
    run->params = args.params;
    run->mode = args.mode;
    run->bump = bump;
    table->discriminator = DISC_MEMBER_TABLE;
    key_copy(&table->run, run_acc->key);
    log_str("eranos: run initialized");
    sol_log_64_(args.run_id, args.mode, 0, 0, 0);
    return 0;
}
