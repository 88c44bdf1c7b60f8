/* record_round (authority): one transaction per round whatever the member count. Three bitmaps
 * over the member table (bit i = slot i, least significant bit first) say who contributed, who
 * validated and who is penalized; `batches` holds one count per contributed slot, in slot order,
 * and a contributor earns points_per_contribution per accepted batch. Everything is checked before
 * anything is written, except the per-member arithmetic, whose failure aborts the whole
 * transaction anyway. A u8 per contributor keeps a round with every one of 1024 members
 * validating and about 550 contributing inside one transaction. */
#include "eranos.h"

static u64 check_bitmap(const bytes_t *bits, u32 member_count) {
    if (bits->len != (member_count + 7) / 8) return ERR_BITMAP_LENGTH;
    if (member_count % 8 && bits->ptr[bits->len - 1] >> (member_count % 8)) return ERR_BITS_PAST_MEMBER_COUNT;
    return 0;
}

static u64 check_batches(const record_round_args_t *a, u64 n_bytes) {
    u64 contributors = 0;
    for (u64 byte = 0; byte < n_bytes; byte++)
        for (u8 c = a->contributed.ptr[byte]; c; c >>= 1) contributors += c & 1;
    if (a->batches.len != contributors) return ERR_BATCH_COUNTS;
    for (u64 i = 0; i < a->batches.len; i++)
        if (a->batches.ptr[i] == 0) return ERR_BATCH_COUNTS;
    return 0;
}

/* Credit goes only to active members holding the run's required stake: a member that left (or
 * withdrew, or was slashed) earns nothing more. A penalty reaches active members and members
 * still unbonding, whose stake stays at risk until their last rounds are judged. */
static u64 check_members(const run_t *run, const member_table_t *table, const record_round_args_t *a,
                         u64 n_bytes) {
    u64 required = run->mode == MODE_PERMISSIONLESS ? run->params.required_stake : 0;
    for (u64 byte = 0; byte < n_bytes; byte++) {
        u8 credited = a->contributed.ptr[byte] | a->validated.ptr[byte];
        u8 penalized = a->penalized.ptr[byte];
        if (credited & penalized) return ERR_CONFLICTING_BITS;
        for (u32 bit = 0; (credited | penalized) >> bit; bit++) {
            const member_t *m = &table->members[byte * 8 + bit];
            if (credited >> bit & 1 && (m->status != STATUS_ACTIVE || m->stake < required))
                return ERR_MEMBER_NOT_CREDITABLE;
            if (penalized >> bit & 1 && m->status != STATUS_ACTIVE && m->status != STATUS_LEFT)
                return ERR_MEMBER_NOT_CREDITABLE;
        }
    }
    return 0;
}

static u64 credit(member_t *m, u64 points, u32 *counter, u8 units) {
    if (*counter > (u32)-1 - units) return ERR_OVERFLOW;
    *counter += units;
    /* points <= MAX_POINTS_PER_BATCH (check_params) and units < 2^8: the product fits in u64
     * (an overflow check on it would need a 128-bit multiply, which BPF lacks) */
    return add_u64(m->points_earned, points * units, &m->points_earned);
}

static u64 slash(run_t *run, member_t *m, i64 now) {
    u64 amount = m->stake < run->params.slash_amount ? m->stake : run->params.slash_amount;
    m->stake -= amount;
    run->total_staked -= amount;
    TRY(add_u64(run->burned, amount, &run->burned)); /* locked in the Run account: nobody gains from a slash */
    if (m->status == STATUS_ACTIVE) run->active_count--;
    m->status = STATUS_SLASHED;
    TRY(increment_u32(&m->penalties));
    m->unbond_at = now + (i64)run->params.unbonding_seconds;
    return 0;
}

typedef struct {
    u16 contributed, validated, penalized;
} counts_t;

static u64 apply_bits(run_t *run, member_table_t *table, const record_round_args_t *a, u64 n_bytes,
                      counts_t *counts) {
    i64 now;
    TRY(now_unix(&now));
    u64 next_count = 0;
    for (u64 byte = 0; byte < n_bytes; byte++) {
        u8 c = a->contributed.ptr[byte], v = a->validated.ptr[byte], p = a->penalized.ptr[byte];
        u8 any = c | v | p;
        /* No bit-scan instruction on BPF (clang 14 crashes lowering ctz), so walk the set bits. */
        for (u32 bit = 0; any >> bit; bit++) {
            member_t *m = &table->members[byte * 8 + bit];
            if (c >> bit & 1)
                TRY(credit(m, run->params.points_per_contribution, &m->contributions, a->batches.ptr[next_count++]));
            if (v >> bit & 1) TRY(credit(m, run->params.points_per_validation, &m->validations, 1));
            if (p >> bit & 1) TRY(slash(run, m, now));
            counts->contributed += c >> bit & 1;
            counts->validated += v >> bit & 1;
            counts->penalized += p >> bit & 1;
        }
    }
    return 0;
}

u64 ix_record_round(ctx_t *ctx) {
    record_round_args_t args;
    if (!parse_record_round(&ctx->data, &args)) return ERR_INVALID_INSTRUCTION;
    TRY(require_accounts(ctx, RECORD_ROUND_ACCOUNTS));
    run_t *run;
    member_table_t *table;
    TRY(load_authority_run(ctx, RECORD_ROUND_AUTHORITY, RECORD_ROUND_RUN, &run));
    TRY(load_members(ctx, RECORD_ROUND_MEMBERS, run, RECORD_ROUND_RUN, &table));
    TRY(settle_params(run));
    if (run->paused) return ERR_RUN_PAUSED;
    if (run->rounds_recorded && args.round <= run->last_round) return ERR_ROUND_NOT_INCREASING;
    TRY(check_bitmap(&args.contributed, run->member_count));
    TRY(check_bitmap(&args.validated, run->member_count));
    TRY(check_bitmap(&args.penalized, run->member_count));
    u64 n_bytes = args.contributed.len;
    TRY(check_batches(&args, n_bytes));
    TRY(check_members(run, table, &args, n_bytes));
    counts_t counts = {0, 0, 0};
    TRY(apply_bits(run, table, &args, n_bytes, &counts));

    round_record_t *rec = &run->recent[run->rounds_recorded % ROUND_RING];
    rec->round = args.round;
    sol_memcpy_(rec->root, args.root, 32);
    TRY(now_slot(&rec->slot));
    rec->contributed = counts.contributed;
    rec->validated = counts.validated;
    rec->penalized = counts.penalized;
    run->last_round = args.round;
    run->rounds_recorded++;
    log_str("eranos: round recorded");
    sol_log_64_(args.round, counts.contributed, counts.validated, counts.penalized, rec->slot);
    return 0;
}
