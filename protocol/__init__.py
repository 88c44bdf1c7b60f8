"""What the coordinator and every node must agree on: the run config, the model's shape, who
trains which batches, who validates whom, and the root over a round's accepted commitments.

Imports only `optim` (the bottom layer), so both `coordinator` and `node` use it without importing
each other (DESIGN.md).
"""
