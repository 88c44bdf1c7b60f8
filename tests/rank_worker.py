"""One rank of a torchrun-launched node for tests/test_ranks.py: rank 0 computes a round (plain,
then with local steps) with the other ranks' help and writes the payloads and state it got; a
follower starts from other weights, which rank 0's must replace. `shard` as the second
argument: the ranks hold the model between them (node/sharded.py); `shard-tied`: so with a tied
embedding and head."""

import sys

import torch
from round_fixture import MICRO_BATCH, make_round, round_outputs

from node import ranks
from node.sharded import Shards
from node.train import Trainer


def main() -> None:
    group = ranks.from_environment(torch.device("cpu"))
    mode = sys.argv[2] if len(sys.argv) > 2 else "replicate"
    seed = 0 if group.rank == 0 else group.rank + 10
    model, data, optimizer, local = make_round(seed, tied=mode == "shard-tied")
    shards = Shards(model.config, group) if mode.startswith("shard") else None
    if group.rank > 0:
        if shards is not None:
            shards.follow()
        else:
            ranks.follow(Trainer(model, None, MICRO_BATCH, group.device, group), group)
    else:
        trainer = Trainer(model, data, MICRO_BATCH, group.device, group, shards)
        torch.save(round_outputs(trainer, optimizer, local), sys.argv[1])
        ranks.stop(group)
    ranks.end_rank()


if __name__ == "__main__":
    main()
