"""The coordinator: a pure round state machine (`machine.py` over `state.py`) and the I/O shell
around it (p2p host, journal, chain submitter, status page)."""
