"""The round protocol's pure rules that the coordinator and every node must compute identically:
who trains which batches, who validates whom, and the root over a round's accepted commitments.

Imports none of agora's other packages, so both `coordinator` and `node` can use it without
importing each other (DESIGN.md).
"""
