import dataclasses

import numpy as np
import pytest
from PIL import Image

from reid.market1501 import ImageName, load_market1501, load_split, parse_name
from reid.synthetic import SyntheticConfig, ensure_synthetic_market1501, write_synthetic_market1501

TINY = SyntheticConfig(
    train_identities=4,
    test_identities=3,
    cameras=3,
    cameras_per_identity=2,
    images_per_camera=2,
    junk=2,
    distractors=3,
    image_size=(16, 8),
)


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("0002_c1s1_000451_03.jpg", ImageName(2, 1, 1, 451, 3)),
        ("1501_c6s4_001902_01.jpg", ImageName(1501, 6, 4, 1902, 1)),
        ("0000_c3s2_012345_02.jpg", ImageName(0, 3, 2, 12345, 2)),
        ("-1_c5s3_065687_02.jpg", ImageName(-1, 5, 3, 65687, 2)),
    ],
)
def test_parses_real_market1501_names(filename, expected):
    name = parse_name(filename)
    assert name == expected
    assert name.filename() == filename
    assert name.is_junk == (expected.person_id == -1)
    assert name.is_distractor == (expected.person_id == 0)


@pytest.mark.parametrize(
    "filename",
    [
        "2_c1s1_000451_03.jpg",
        "0002_c1_000451_03.jpg",
        "0002_c1s1_000451_03.png",
        "0002_c0s1_000451_03.jpg",
        "Thumbs.db",
    ],
)
def test_malformed_names_are_refused(filename):
    with pytest.raises(ValueError, match="Market-1501 image name|Camera numbers start at 1"):
        parse_name(filename)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    return write_synthetic_market1501(tmp_path_factory.mktemp("m") / "market", TINY)


def test_generator_writes_the_market1501_layout(tiny_root):
    data = load_market1501(tiny_root, image_size=(16, 8))
    assert data.input_shape == (16, 8, 3)
    assert len(data.train) == 4 * 2 * 2 and data.train.num_identities == 4
    assert len(data.query) == 3 * 2  # one query per identity and camera
    gallery_ids = data.gallery.person_ids
    assert int(np.sum(gallery_ids == -1)) == 2 and int(np.sum(gallery_ids == 0)) == 3
    assert set(data.query.person_ids.tolist()) == set(gallery_ids.tolist()) - {-1, 0}
    assert not set(data.train.person_ids.tolist()) & set(data.query.person_ids.tolist())
    assert data.train.images.dtype == np.float32 and 0 <= data.train.images.min() < 1
    labels, ids = data.train.labels()
    assert sorted(set(labels.tolist())) == [0, 1, 2, 3] and ids == tuple(sorted(ids))
    for pid in set(data.train.person_ids.tolist()):
        assert len(set(data.train.cameras[data.train.person_ids == pid].tolist())) == 2


def test_generator_is_deterministic(tiny_root, tmp_path):
    again = write_synthetic_market1501(tmp_path / "again", TINY)
    for split in ("bounding_box_train", "query", "bounding_box_test"):
        first = sorted((tiny_root / split).iterdir())
        second = sorted((again / split).iterdir())
        assert [p.name for p in first] == [p.name for p in second]
        assert all(a.read_bytes() == b.read_bytes() for a, b in zip(first, second))
    with pytest.raises(FileExistsError):
        write_synthetic_market1501(again, TINY)
    assert ensure_synthetic_market1501(again, TINY) == again


def test_identity_looks_alike_across_images(tiny_root):
    """Same-identity images are closer in colour statistics than different identities."""
    data = load_market1501(tiny_root, image_size=(16, 8))
    stats = data.train.images[:, 4:12].reshape(len(data.train), -1, 3).mean(1)
    ids = data.train.person_ids
    distance = np.linalg.norm(stats[:, None] - stats[None], axis=-1)
    same = distance[(ids[:, None] == ids[None]) & ~np.eye(len(ids), dtype=bool)].mean()
    different = distance[ids[:, None] != ids[None]].mean()
    assert same < different


def test_loader_errors(tmp_path, tiny_root):
    with pytest.raises(FileNotFoundError, match="Market-1501 folder not found"):
        load_market1501(tmp_path / "nope")
    for split in ("bounding_box_train", "query", "bounding_box_test"):
        (tmp_path / "empty" / split).mkdir(parents=True)
    with pytest.raises(ValueError, match="holds no .jpg image"):
        load_market1501(tmp_path / "empty")
    bad = tmp_path / "bad" / "query"
    bad.mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(bad / "person1.jpg")
    with pytest.raises(ValueError, match="Received: filename='person1.jpg'"):
        load_split(tmp_path / "bad", "query")
    junk = tmp_path / "junk" / "query"
    junk.mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(junk / "-1_c1s1_000001_01.jpg")
    with pytest.raises(ValueError, match="belong in bounding_box_test only"):
        load_split(tmp_path / "junk", "query")
    with pytest.raises(ValueError, match="cameras_per_identity"):
        SyntheticConfig(cameras=3, cameras_per_identity=1)


def test_ensure_rewrites_a_dataset_made_with_other_settings(tmp_path):
    root = ensure_synthetic_market1501(tmp_path / "market", TINY)
    queries = len(list((root / "query").iterdir()))
    assert ensure_synthetic_market1501(root, TINY) == root
    more = dataclasses.replace(TINY, test_identities=TINY.test_identities + 2)
    ensure_synthetic_market1501(root, more)
    assert len(list((root / "query").iterdir())) == queries + 2 * more.cameras_per_identity
    assert sorted(p.name for p in tmp_path.iterdir()) == ["market"]
