"""Gossip topics. Every run has two: the run's topic, which every member hears (the coordinator's
messages, commits, joins), and its coordinator's topic, for what only the coordinator acts on
(heartbeats and verdicts). Relaying those to every member made each member's gossip grow with
the run's size; on their own topic the coordinator hears them and relays them to nobody.
"""

from p2p.messages import Heartbeat, Message, Verdict

RUN_PREFIX = "eranos/"
COORDINATOR_PREFIX = "eranos-coordinator/"
FOR_COORDINATOR = (Heartbeat, Verdict)


def run_topic(run: str) -> str:
    return RUN_PREFIX + run


def coordinator_topic(run: str) -> str:
    return COORDINATOR_PREFIX + run


def topic_for(run: str, message: Message) -> str:
    return coordinator_topic(run) if isinstance(message, FOR_COORDINATOR) else run_topic(run)


def runs_in(topics: list[str]) -> list[str]:
    """The runs named by a peer's run topics (its coordinator topics name no more runs)."""
    return sorted(t.removeprefix(RUN_PREFIX) for t in topics if t.startswith(RUN_PREFIX))
