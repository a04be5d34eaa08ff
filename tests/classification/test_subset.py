import numpy as np
import pytest

from classification.subset import ClassSubset, load_class_mapping, parse_classes, save_class_mapping


def test_select_keeps_subset_and_remaps_labels():
    subset = ClassSubset((7, 0, 3))
    x = np.arange(8)[:, None]
    y = np.array([0, 1, 3, 7, 7, 2, 3, 9])
    x_sub, y_sub = subset.select(x, y)
    np.testing.assert_array_equal(x_sub[:, 0], [0, 2, 3, 4, 6])
    np.testing.assert_array_equal(y_sub, [1, 2, 0, 0, 2])
    np.testing.assert_array_equal(subset.to_teacher_labels(y_sub), [0, 3, 7, 7, 3])


def test_mapping_saved_beside_student(tmp_path):
    subset = ClassSubset((2, 5), class_names=tuple("abcdef"))
    path = save_class_mapping(tmp_path / "student.keras", subset)
    assert path.name == "student.keras.classes.json"
    assert load_class_mapping(tmp_path / "student.keras").class_indices == (2, 5)
    assert subset.to_json()["class_names"] == ["c", "f"]
    assert load_class_mapping(tmp_path / "other.keras") is None


@pytest.mark.parametrize(
    ("indices", "message"),
    [((), "at least one class"), ((1, 1), "distinct"), ((-1,), ">= 0"), ((0, 9), "does not exist")],
)
def test_bad_subsets(indices, message):
    with pytest.raises(ValueError, match=message):
        ClassSubset(indices, class_names=tuple("abc"))


def test_parse_classes():
    assert parse_classes("0, 3,7") == (0, 3, 7)
    with pytest.raises(ValueError, match="Received: classes='0,x'"):
        parse_classes("0,x")
    with pytest.raises(ValueError, match="empty"):
        ClassSubset((5,)).select(np.zeros((2, 1)), np.array([0, 1]))
