"""COCO-format detection data (an images folder + an instances JSON), read through pycocotools.

Every annotation and image is checked when the dataset is loaded. Problems (a box outside its
image, zero area, an unknown category or image, a missing or unreadable image file) are collected
as `AnnotationIssue`s naming the file and the id; `on_error="raise"` stops with that report,
`on_error="skip"` drops the bad entries and keeps the report in `dataset.issues`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO

from kd_keras.images import inspect_image

ON_ERROR = ("raise", "skip")
# Boxes may overshoot the image by this many pixels (rounding in annotation tools).
_EDGE_TOLERANCE = 1.0
_REPORTED_ISSUES = 20


@dataclasses.dataclass(frozen=True)
class AnnotationIssue:
    """One bad entry: the file it is in (the JSON, or the image), its ids and what is wrong."""

    file: str
    reason: str
    image_id: int | None = None
    annotation_id: int | None = None

    def __str__(self) -> str:
        ids = []
        if self.image_id is not None:
            ids.append(f"image_id={self.image_id}")
        if self.annotation_id is not None:
            ids.append(f"annotation_id={self.annotation_id}")
        return f"{self.file} [{', '.join(ids)}]: {self.reason}"


class DatasetError(ValueError):
    """A dataset that cannot be trained on or scored as it is."""


class AnnotationError(DatasetError):
    """A dataset with bad annotations or images, loaded with `on_error="raise"`."""

    def __init__(self, issues: list[AnnotationIssue]):
        self.issues = list(issues)
        lines = [str(issue) for issue in self.issues[:_REPORTED_ISSUES]]
        more = len(self.issues) - len(lines)
        if more > 0:
            lines.append(f"... and {more} more")
        super().__init__(
            f"Found {len(self.issues)} bad annotation(s) or image(s):\n  "
            + "\n  ".join(lines)
            + "\nFix them, or load with on_error='skip' (recipe: --set on_bad_annotations=skip) "
            "to drop them. Received: on_error='raise'."
        )


@dataclasses.dataclass(frozen=True)
class ImageRecord:
    """One image: `boxes` `[n, 4]` as `x_min, y_min, x_max, y_max` pixels, `classes` `[n]`."""

    image_id: int
    path: Path
    width: int
    height: int
    boxes: np.ndarray
    classes: np.ndarray


@dataclasses.dataclass
class CocoDataset:
    """A validated COCO detection set.

    Attributes:
        records: the usable images with their boxes, in image-id order.
        category_ids: COCO category ids; class index `i` is `category_ids[i]`.
        class_names: category names in the same order.
        coco: pycocotools ground truth holding only the usable images and annotations (for
            `COCOeval`).
        issues: the problems found (empty when everything was clean).
        annotations_file: where the annotations came from.
    """

    records: list[ImageRecord]
    category_ids: tuple[int, ...]
    class_names: tuple[str, ...]
    coco: COCO
    issues: list[AnnotationIssue]
    annotations_file: Path

    @property
    def num_classes(self) -> int:
        return len(self.category_ids)

    @property
    def num_boxes(self) -> int:
        return int(sum(len(r.boxes) for r in self.records))

    def __len__(self) -> int:
        return len(self.records)

    def select(self, indices) -> CocoDataset:
        """The images at `indices` (positions in `records`) with their ground truth."""
        records = [self.records[int(i)] for i in indices]
        keep = {r.image_id for r in records}
        data = dict(self.coco.dataset)
        data["images"] = [i for i in data["images"] if i["id"] in keep]
        data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
        return dataclasses.replace(self, records=records, coco=_coco_from_dict(data))

    def aligned_to(self, reference: CocoDataset) -> CocoDataset:
        """This set with class indices following `reference`'s categories (matched by id).

        A validation set written separately from its training set may list fewer categories, or
        list them in another order; class index `i` must still mean `reference.category_ids[i]`
        or every score is given to the wrong category.

        Raises:
            DatasetError: a category id unknown to `reference`, or one named differently.
        """
        known = dict(zip(reference.category_ids, reference.class_names))
        unknown = [c for c in self.category_ids if c not in known]
        renamed = [
            f"{c}: {name!r} vs {known[c]!r}"
            for c, name in zip(self.category_ids, self.class_names)
            if c in known and name != known[c]
        ]
        if unknown or renamed:
            raise DatasetError(
                f"The categories of {self.annotations_file} do not match those of "
                f"{reference.annotations_file}: the models predict the reference's categories "
                f"{dict(known)}. Use the same 'categories' list in both files. Received: "
                f"unknown ids {unknown}, renamed {renamed}."
            )
        if self.category_ids == reference.category_ids:
            return self
        index = {c: i for i, c in enumerate(reference.category_ids)}
        to_reference = np.array([index[c] for c in self.category_ids], np.int64)
        records = [dataclasses.replace(r, classes=to_reference[r.classes]) for r in self.records]
        data = dict(self.coco.dataset)
        data["categories"] = [c for c in reference.coco.dataset["categories"]]
        return dataclasses.replace(
            self,
            records=records,
            category_ids=reference.category_ids,
            class_names=reference.class_names,
            coco=_coco_from_dict(data),
        )

    def subset(self, count: int) -> CocoDataset:
        """The first `count` images (and their ground truth), for quick runs."""
        return self.select(range(min(count, len(self.records))))


def _coco_from_dict(data: dict) -> COCO:
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _check_structure(data, annotations_file: Path) -> None:
    """Refuses JSON that is not COCO instances data: the three lists of objects."""
    keys = ("images", "annotations", "categories")
    if not isinstance(data, dict):
        kind = "null" if data is None else type(data).__name__
        raise ValueError(
            f"{annotations_file} is not a COCO instances file: expected an object with keys "
            f"{', '.join(keys)}. Received: a JSON {kind}."
        )
    missing = [key for key in keys if key not in data]
    if missing:
        raise ValueError(
            f"{annotations_file} is not a COCO instances file: expected keys 'images', "
            f"'annotations' and 'categories'. Received: missing={missing}."
        )
    for key in keys:
        entries = data[key]
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise ValueError(
                f"{annotations_file}: '{key}' must be a list of objects. "
                f"Received: {key}={str(entries)[:80]}."
            )


def _checked_categories(categories: list[dict], annotations_file: Path) -> list[dict]:
    """The categories sorted by id; refuses missing, non-integer, duplicate ids or names.

    Two categories sharing an id would give the model a class that never trains and label its
    boxes with the other name; two sharing a name cannot be told apart in the report.
    """
    if not categories:
        raise ValueError(f"{annotations_file} defines no categories. Received: categories=[].")
    for category in categories:
        cid = category.get("id")
        if not isinstance(cid, int) or isinstance(cid, bool):
            raise ValueError(
                f"{annotations_file}: every category needs an integer 'id'. "
                f"Received: category={category!r}."
            )
        if not isinstance(category.get("name"), str) or not category["name"].strip():
            raise ValueError(
                f"{annotations_file}: every category needs a 'name'. "
                f"Received: category={category!r}."
            )
    for field in ("id", "name"):
        seen: dict[object, int] = {}
        for category in categories:
            seen[category[field]] = seen.get(category[field], 0) + 1
        repeated = [value for value, count in seen.items() if count > 1]
        if repeated:
            raise ValueError(
                f"{annotations_file}: categories must have distinct {field}s; give each "
                f"category its own {field}. Received: repeated {field}s {repeated} in "
                f"categories={categories!r}."
            )
    return sorted(categories, key=lambda c: c["id"])


def _size_problem(entry: dict, real: tuple[int, int] | None, path: Path) -> str | None:
    width, height = entry.get("width", 0), entry.get("height", 0)
    if not (isinstance(width, int | float) and isinstance(height, int | float)):
        return f"image entry needs numeric width and height; got {width!r} x {height!r}"
    if not (width > 0 and height > 0):
        return "image entry needs positive width and height"
    if real is not None and (int(width), int(height)) != real:
        return (
            f"the JSON says {int(width)}x{int(height)} but {path.name} is {real[0]}x{real[1]} "
            "as displayed (EXIF orientation applied); its boxes would land on the wrong pixels. "
            "Annotate the image as displayed and fix width/height in the JSON"
        )
    return None


def _box_problem(bbox, width: float, height: float) -> str | None:
    if not isinstance(bbox, list | tuple) or len(bbox) != 4:
        return f"bbox must be [x, y, width, height]; got {bbox!r}"
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in bbox):
        return f"bbox holds non-numbers (write numbers without quotes): {bbox!r}"
    x, y, w, h = (float(v) for v in bbox)
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        return f"bbox holds non-finite values: {bbox!r}"
    if w <= 0 or h <= 0:
        return f"box has zero or negative area (width={w:g}, height={h:g})"
    tol = _EDGE_TOLERANCE
    if x < -tol or y < -tol or x + w > width + tol or y + h > height + tol:
        return f"box {bbox!r} lies outside the {width:g}x{height:g} image"
    return None


def load_coco_dataset(
    images_dir: str | os.PathLike,
    annotations_file: str | os.PathLike,
    on_error: str = "raise",
    check_images: bool = True,
) -> CocoDataset:
    """Loads and validates a COCO detection dataset.

    Crowd annotations (`iscrowd=1`) are not trained on but stay in the ground truth, where
    COCOeval ignores detections matching them.

    Args:
        images_dir: folder the images' `file_name`s are relative to.
        annotations_file: COCO instances JSON.
        on_error: `"raise"` to stop with the report of every bad entry, `"skip"` to drop them.
        check_images: decode every image once (catches missing, unreadable and truncated files
            up front, before any training).

    Raises:
        FileNotFoundError: the folder or the JSON is missing.
        ValueError: the JSON is not COCO instances data.
        AnnotationError: bad entries with `on_error="raise"`.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"Expected on_error in {ON_ERROR}. Received: on_error={on_error!r}.")
    images_dir, annotations_file = Path(images_dir), Path(annotations_file)
    if not images_dir.is_dir():
        raise FileNotFoundError(
            f"Images folder not found. Pass --data DIR (the folder of the images). "
            f"Received: data={str(images_dir)!r}."
        )
    if not annotations_file.is_file():
        raise FileNotFoundError(
            "Annotations file not found. Pass --annotations FILE (a COCO instances JSON). "
            f"Received: annotations={str(annotations_file)!r}."
        )
    try:
        data = json.loads(annotations_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{annotations_file} is not valid JSON: {error}") from None
    _check_structure(data, annotations_file)
    json_name = str(annotations_file)
    issues: list[AnnotationIssue] = []
    categories = _checked_categories(data["categories"], annotations_file)
    category_ids = tuple(int(c["id"]) for c in categories)
    class_index = {cid: i for i, cid in enumerate(category_ids)}

    images = {}
    files_by_id: dict[object, list[str]] = {}
    for image in data["images"]:
        files_by_id.setdefault(image.get("id"), []).append(str(image.get("file_name")))
    for image in data["images"]:
        path = images_dir / str(image.get("file_name"))
        files = files_by_id[image.get("id")]
        if len(files) > 1:
            problem = (
                f"image id {image.get('id')!r} is used by {len(files)} images "
                f"({', '.join(files)}); its boxes could belong to any of them. Give each image "
                "its own id"
            )
        else:
            problem, real_size = inspect_image(path) if check_images else (None, None)
            if problem is None:
                problem = _size_problem(image, real_size, path)
        if problem is not None:
            issues.append(AnnotationIssue(str(path), problem, image_id=image.get("id")))
            continue
        images[image["id"]] = image

    kept_annotations = []
    boxes: dict[int, list] = {image_id: [] for image_id in images}
    bad_image_ids = {i.image_id for i in issues if i.annotation_id is None}
    for ann in data["annotations"]:
        image_id, ann_id = ann.get("image_id"), ann.get("id")
        if image_id in bad_image_ids:
            continue  # already reported with its image
        image = images.get(image_id)
        if image is None:
            problem = f"image_id {image_id} is not in 'images'"
        elif ann.get("category_id") not in class_index:
            problem = f"unknown category_id {ann.get('category_id')!r}; known: {list(category_ids)}"
        else:
            problem = _box_problem(ann.get("bbox"), image["width"], image["height"])
        if problem is not None:
            issues.append(AnnotationIssue(json_name, problem, image_id, ann_id))
            continue
        # COCOeval reads `iscrowd` from every ground-truth box; many exporters leave it out.
        area = float(ann.get("area", ann["bbox"][2] * ann["bbox"][3]))
        ann = {**ann, "iscrowd": int(ann.get("iscrowd", 0)), "area": area}
        kept_annotations.append(ann)
        if not ann.get("iscrowd", 0):
            x, y, w, h = (float(v) for v in ann["bbox"])
            boxes[image_id].append(([x, y, x + w, y + h], class_index[ann["category_id"]]))

    if issues and on_error == "raise":
        raise AnnotationError(issues)
    records = []
    for image_id in sorted(images):
        image = images[image_id]
        items = boxes[image_id]
        box_array = np.array([b for b, _ in items], np.float32).reshape(-1, 4)
        np.clip(box_array[:, 0::2], 0, image["width"], out=box_array[:, 0::2])
        np.clip(box_array[:, 1::2], 0, image["height"], out=box_array[:, 1::2])
        records.append(
            ImageRecord(
                image_id=image_id,
                path=images_dir / image["file_name"],
                width=int(image["width"]),
                height=int(image["height"]),
                boxes=box_array,
                classes=np.array([c for _, c in items], np.int64),
            )
        )
    if not records:
        raise DatasetError(
            f"No usable images in {annotations_file} ({len(issues)} bad entries). "
            "Received: an empty dataset."
        )
    if not any(len(r.boxes) for r in records):
        raise DatasetError(
            f"{annotations_file} has {len(records)} usable images but no boxes to train on or "
            "score against (COCOeval's AP is undefined without ground truth). Check that "
            "'annotations' refer to these images' ids and are not all crowd regions. "
            "Received: 0 boxes."
        )
    clean = {
        "images": [images[i] for i in sorted(images)],
        "annotations": kept_annotations,
        "categories": categories,
    }
    return CocoDataset(
        records=records,
        category_ids=category_ids,
        class_names=tuple(c["name"] for c in categories),
        coco=_coco_from_dict(clean),
        issues=issues,
        annotations_file=annotations_file,
    )
