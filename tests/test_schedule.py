import pytest

from optim.schedule import LrSchedule


def test_warmup_rises_linearly_to_the_peak():
    s = LrSchedule("constant", lr=1.0, warmup=4)
    assert [s.lr_at(i) for i in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_cosine_falls_from_peak_to_final_ratio():
    s = LrSchedule("cosine", lr=1.0, warmup=0, total=10, final_ratio=0.1)
    assert s.lr_at(0) == 1.0
    assert s.lr_at(5) == pytest.approx(0.55)
    assert s.lr_at(10) == pytest.approx(0.1)
    assert s.lr_at(50) == pytest.approx(0.1)


def test_wsd_holds_then_decays_linearly_over_the_last_fraction():
    s = LrSchedule("wsd", lr=1.0, warmup=2, total=10, final_ratio=0.0, decay_fraction=0.2)
    assert [s.lr_at(i) for i in range(11)] == [0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.0]


@pytest.mark.parametrize(
    "bad",
    [
        LrSchedule("linear"),
        LrSchedule("cosine", total=5, warmup=5),
        LrSchedule(lr=0.0),
        LrSchedule(final_ratio=2.0),
    ],
)
def test_invalid_schedules_are_rejected(bad):
    with pytest.raises(ValueError):
        bad.check()
