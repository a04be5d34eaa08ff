"""The Market-1501 on-disk layout: file names, splits and the loader.

A Market-1501 folder holds three splits of cropped person images:

    bounding_box_train/   training identities
    query/                one or more images per test identity and camera
    bounding_box_test/    the gallery: test identities, distractors and junk

Each name reads `PPPP_cCsS_FFFFFF_NN.jpg`: person `PPPP`, camera `C`, video sequence `S`, frame
`FFFFFF` and the detection index `NN` in that frame. In the gallery, person `0000` marks a
distractor (a false detection, kept as a non-matching gallery image) and `-1` a junk image
(ignored in evaluation, as in the standard protocol). The same loader reads the real dataset and the
built-in generated one (`reid.synthetic`).
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import numpy as np

from kd_keras.images import read_resized

SPLITS = ("bounding_box_train", "query", "bounding_box_test")
JUNK = -1
DISTRACTOR = 0
_NAME = re.compile(r"^(-1|\d{4})_c(\d)s(\d+)_(\d{6})_(\d{2})\.jpg$")


@dataclasses.dataclass(frozen=True)
class ImageName:
    """The fields of one Market-1501 file name."""

    person_id: int
    camera: int
    sequence: int
    frame: int
    index: int

    @property
    def is_junk(self) -> bool:
        return self.person_id == JUNK

    @property
    def is_distractor(self) -> bool:
        return self.person_id == DISTRACTOR

    def filename(self) -> str:
        person = "-1" if self.is_junk else f"{self.person_id:04d}"
        return f"{person}_c{self.camera}s{self.sequence}_{self.frame:06d}_{self.index:02d}.jpg"


def parse_name(filename: str) -> ImageName:
    """Parses `PPPP_cCsS_FFFFFF_NN.jpg` (person `-1` = junk, `0000` = distractor).

    Raises:
        ValueError: the name does not follow the Market-1501 pattern.

    Example:
        >>> parse_name("0002_c1s1_000451_03.jpg")
        ImageName(person_id=2, camera=1, sequence=1, frame=451, index=3)
    """
    match = _NAME.match(os.path.basename(filename))
    if match is None:
        raise ValueError(
            "Expected a Market-1501 image name like 0002_c1s1_000451_03.jpg (person id of 4 "
            "digits or -1, camera, sequence, 6-digit frame, 2-digit index). Rename or remove the "
            f"file. Received: filename={filename!r}."
        )
    person, camera, sequence, frame, index = match.groups()
    if camera == "0":
        raise ValueError(f"Camera numbers start at 1. Received: filename={filename!r}.")
    return ImageName(int(person), int(camera), int(sequence), int(frame), int(index))


@dataclasses.dataclass(frozen=True)
class ReIDSplit:
    """The images of one split as float32 in [0, 1], shape `[n, h, w, 3]`, with their names.

    Attributes:
        images: decoded, resized images.
        person_ids: person id per image (`-1` junk, `0` distractor), as in the file names.
        cameras: camera per image.
        paths: file path per image, in sorted order.
    """

    images: np.ndarray
    person_ids: np.ndarray
    cameras: np.ndarray
    paths: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def num_identities(self) -> int:
        return len(set(self.person_ids.tolist()) - {JUNK, DISTRACTOR})

    def labels(self) -> tuple[np.ndarray, tuple[int, ...]]:
        """Contiguous training labels `0..N-1` and the person id of each label."""
        ids = tuple(sorted(set(self.person_ids.tolist())))
        lookup = {person: label for label, person in enumerate(ids)}
        return np.array([lookup[p] for p in self.person_ids.tolist()], np.int64), ids


@dataclasses.dataclass(frozen=True)
class Market1501:
    """The three splits; `train` has neither junk nor distractors."""

    train: ReIDSplit
    query: ReIDSplit
    gallery: ReIDSplit

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])


def list_split(root: str | os.PathLike, split: str) -> list[tuple[Path, ImageName]]:
    """The `.jpg` files of one split with their parsed names, sorted; other files are ignored.

    Raises:
        FileNotFoundError: the split folder is missing.
        ValueError: a malformed name, or no image at all.
    """
    folder = Path(root) / split
    if not folder.is_dir():
        raise FileNotFoundError(
            f"Market-1501 split folder not found: {folder}. Expected {', '.join(SPLITS)} under "
            f"the dataset root. Received: root={str(root)!r}."
        )
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".jpg")
    entries = [(path, parse_name(path.name)) for path in files]
    if not entries:
        raise ValueError(
            f"The split {split!r} holds no .jpg image. Expected files like "
            f"0002_c1s1_000451_03.jpg in {folder}. Received: root={str(root)!r}."
        )
    return entries


def load_split(
    root: str | os.PathLike, split: str, image_size: tuple[int, int] = (64, 32)
) -> ReIDSplit:
    """Loads one split, resized to `image_size = (height, width)`.

    Training images must belong to real identities; query images may not be junk or distractors
    (the protocol has no ground truth for them).
    """
    entries = list_split(root, split)
    if split != "bounding_box_test":
        for path, name in entries:
            if name.is_junk or name.is_distractor:
                raise ValueError(
                    f"Junk (-1) and distractor (0000) images belong in bounding_box_test only, "
                    f"not in {split}. Move or remove the file. Received: filename={path.name!r}."
                )
    height, width = image_size
    images = np.empty((len(entries), height, width, 3), np.float32)
    for i, (path, _) in enumerate(entries):
        images[i] = read_resized(path, (height, width)).astype(np.float32) / 255.0
    names = [name for _, name in entries]
    return ReIDSplit(
        images=images,
        person_ids=np.array([n.person_id for n in names], np.int64),
        cameras=np.array([n.camera for n in names], np.int64),
        paths=tuple(str(path) for path, _ in entries),
    )


def load_market1501(root: str | os.PathLike, image_size: tuple[int, int] = (64, 32)) -> Market1501:
    """Loads `bounding_box_train`, `query` and `bounding_box_test` from a Market-1501 folder.

    Args:
        root: the dataset folder (real Market-1501 or one written by `reid.synthetic`).
        image_size: `(height, width)` every image is resized to.

    Raises:
        FileNotFoundError: the folder or a split is missing.
        ValueError: a malformed file name, an empty split, or a query whose identity the gallery
            lacks, or holds only under the query's own camera.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"Market-1501 folder not found. Pass the folder holding {', '.join(SPLITS)}. "
            f"Received: root={str(root)!r}."
        )
    train, query, gallery = (load_split(root, split, image_size) for split in SPLITS)
    missing = sorted(set(query.person_ids.tolist()) - set(gallery.person_ids.tolist()))
    if missing:
        raise ValueError(
            f"Query identities {missing[:5]} have no image in bounding_box_test, so they can "
            f"never be matched. Received: root={str(root)!r}."
        )
    other_cameras: dict[int, set[int]] = {}
    for person, camera in zip(gallery.person_ids.tolist(), gallery.cameras.tolist()):
        other_cameras.setdefault(person, set()).add(camera)
    unmatchable = [
        Path(path).name
        for path, person, camera in zip(query.paths, query.person_ids, query.cameras)
        if not other_cameras[int(person)] - {int(camera)}
    ]
    if unmatchable:
        raise ValueError(
            f"{len(unmatchable)} query image(s) show a person whom bounding_box_test holds only "
            "under the query's own camera; the Market-1501 protocol ignores same-camera "
            "matches, so they can never be matched. Add a gallery image of that person from "
            "another camera, or remove the query. "
            f"Received: {', '.join(unmatchable[:5])}{' ...' if len(unmatchable) > 5 else ''}."
        )
    return Market1501(train, query, gallery)
