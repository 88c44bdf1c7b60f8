"""The event log's one schema, read back robustly, and `eranos timeline` over it."""

import json

from eranos.timeline import load, main, totals
from protocol.events import Event, EventLog, read_events


class Clock:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_a_span_is_written_with_its_start_and_length(tmp_path):
    clock = Clock()
    log = EventLog(tmp_path / "events.jsonl", "node-abc", clock)
    with log.span("train", round=3):
        clock.t = 101.5
    log.close()
    assert json.loads((tmp_path / "events.jsonl").read_text()) == {
        "t": 100.0, "process": "node-abc", "name": "train", "round": 3, "dur": 1.5,
    }  # fmt: skip


def test_lines_that_do_not_parse_are_skipped_not_fatal(tmp_path):
    path = tmp_path / "events.jsonl"
    good = json.dumps({"t": 1, "process": "p", "name": "apply", "round": 0, "dur": 0.5})
    path.write_text("\n".join(["{broken", good, '{"t": "x"}', "[]", '{"process": "p"}']))
    assert read_events(path) == [Event(1.0, "p", "apply", 0, 0.5)]


def test_a_log_without_a_path_writes_nothing(tmp_path):
    log = EventLog(None, "coordinator")
    with log.span("training", 0):
        pass
    assert list(tmp_path.iterdir()) == []


def write(path, *events):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(e.__dict__) + "\n" for e in events))


def test_timeline_sums_each_process_time_per_kind_of_span(tmp_path):
    write(tmp_path / "coordinator.events.jsonl", Event(0, "coordinator", "training", 0, 2.0))
    write(
        tmp_path / "node-0" / "events.jsonl",
        Event(0, "node-a", "train", 0, 1.25),
        Event(2, "node-a", "train", 1, 1.0),
    )
    events = load(tmp_path)
    assert list(events) == ["coordinator", "node-a"]
    assert totals(events) == {"coordinator": {"training": 2.0}, "node-a": {"train": 2.25}}


def test_timeline_draws_a_png(tmp_path, capsys):
    write(tmp_path / "coordinator.events.jsonl", Event(0, "coordinator", "training", 0, 2.0))
    main([str(tmp_path)])
    assert (tmp_path / "timeline.png").stat().st_size > 0 and "training" in capsys.readouterr().out


def test_utilization_is_own_compute_over_wall_time_from_the_first_batch():
    from eranos.timeline import utilization

    evs = [
        Event(10, "n", "train", 0, 3.0),
        Event(10, "n", "compute", 0, 2.0),
        Event(18, "n", "compute", 1, 2.0),
    ]
    assert utilization(evs) == 4.0 / 10.0
    assert utilization([Event(0, "c", "training", 0, 1.0)]) is None


def test_startup_stages_and_the_time_to_the_first_training():
    from eranos.timeline import startup

    evs = [
        Event(100, "n", "start-up: imports", -1, 5.0),
        Event(105, "n", "start-up: chain join", -1, 1.5),
        Event(112, "n", "train", 0, 2.0),
        Event(120, "n", "train", 1, 2.0),
    ]
    assert startup(evs) == {"imports": 5.0, "chain join": 1.5, "first training": 12.0}
