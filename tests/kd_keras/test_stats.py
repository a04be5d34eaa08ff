import pytest

from kd_keras.stats import gap_closed, mean_interval, paired_difference


def test_paired_interval_is_students_t_over_the_per_seed_differences():
    # Differences 1..5: mean 3, sample std sqrt(2.5), t(0.975, 4) = 2.776445.
    result = paired_difference([11, 12, 13, 14, 15], [10, 10, 10, 10, 10])
    half = 2.776445 * 2.5**0.5 / 5**0.5
    assert result.mean == pytest.approx(3.0)
    assert (result.low, result.high) == pytest.approx((3 - half, 3 + half), abs=1e-5)
    assert result.above_zero and result.seeds == 5
    assert result.text() == "+3.000 [+1.037, +4.963] (95%, 5 seeds)"
    # Pairing removes what the seeds share: a constant gain has a zero-width interval.
    constant = paired_difference([0.3, 0.9, 0.5], [0.2, 0.8, 0.4])
    assert constant.low == pytest.approx(0.1) and constant.high == pytest.approx(0.1)


def test_gap_closed_is_the_per_seed_fraction_of_teacher_minus_scratch():
    result = gap_closed([0.6, 0.7], [0.4, 0.5], 0.8)
    assert result.values == pytest.approx((0.5, 2 / 3))
    with pytest.raises(ValueError, match="no gap to close"):
        gap_closed([0.6, 0.7], [0.4, 0.9], 0.8)


def test_one_seed_or_unpaired_values_are_refused():
    with pytest.raises(ValueError, match="at least 2 seeds"):
        mean_interval([0.1])
    with pytest.raises(ValueError, match="one treated and one baseline value per seed"):
        paired_difference([0.1, 0.2], [0.1])


def test_kd_gain_has_the_gap_only_where_the_teacher_is_above_scratch():
    from kd_keras.stats import kd_gain

    gain = kd_gain([0.6, 0.7], [0.4, 0.5], 0.8)
    assert gain["difference"]["values"] == pytest.approx([0.2, 0.2])
    assert gain["gap_closed"]["values"] == pytest.approx([0.5, 2 / 3])
    assert "gap_closed" not in kd_gain([0.6, 0.7], [0.4, 0.9], [0.8, 0.8])


def test_kd_gain_lines_state_the_interval_and_the_gap():
    from kd_keras.stats import kd_gain, kd_gain_lines

    gain = {"metric": "accuracy", **kd_gain([0.6, 0.7, 0.65], [0.4, 0.5, 0.45], 0.8)}
    first, second = kd_gain_lines({"student (KD)": gain})
    assert first.startswith("student (KD) − scratch, accuracy: +0.200 [+0.200, +0.200]")
    assert first.endswith("interval above zero: True")
    assert "gap closed: +0.579" in second  # mean of 0.2/0.4, 0.2/0.3, 0.2/0.35


def test_report_gains_use_each_seeds_teacher_when_the_runs_hold_one():
    from kd_keras.pipeline.reporting import kd_gains

    def run(model, seed, accuracy, distilled=False):
        return {"model": model, "seed": seed, "accuracy": accuracy, "distilled": distilled}

    students = [run("scratch", 0, 0.4), run("scratch", 1, 0.5)]
    students += [run("kd", 0, 0.6, True), run("kd", 1, 0.7, True)]
    teacher_row = {"model": "teacher", "accuracy": 0.8}
    shared = kd_gains(students, teacher_row, "scratch", "accuracy")["kd"]["gap_closed"]
    assert shared["values"] == pytest.approx([0.5, 2 / 3])
    own = students + [run("teacher", 0, 0.8), run("teacher", 1, 0.9)]
    per_seed = kd_gains(own, teacher_row, "scratch", "accuracy")["kd"]["gap_closed"]
    assert per_seed["values"] == pytest.approx([0.5, 0.5])
