"""What a payload must say about itself: the step, round and sender of the commit that names it.

The codec writes these into every payload's header. The coordinator's check and every
validator's replay refuse a payload whose stamp is not its commit's, so an honest payload cannot
be re-presented for another step (which every member's `apply` would refuse, stalling the run),
another round, or as another member's work (so two members' payloads are never the same bytes).
"""

from optim.codec import Payload


def stamp_error(payload: Payload, sender: bytes, round_number: int, step: int) -> str | None:
    """Why `payload` cannot be `sender`'s contribution to this round and step; None if it can."""
    if payload.origin != sender:
        return f"payload names sender {payload.origin.hex()[:8]}, committed by {sender.hex()[:8]}"
    if payload.round != round_number:
        return f"payload is for round {payload.round}, committed in round {round_number}"
    if payload.step != step:
        return f"payload is for step {payload.step}, the round's step is {step}"
    return None
