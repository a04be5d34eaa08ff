"""Pictures of what detectors see: boxes of several models on one image, and their heatmaps.

- `draw_detections`: one image with each model's boxes in its own colour (and the ground truth),
  plus a legend strip below it; pure numpy/PIL, for a notebook or a report.
- `save_detection_grid`: a PNG with one row per image and one column per model (teacher,
  student, int8 ...), ground truth in every panel.
- `save_heatmap_grid`: a PNG of each model's heatmap (max over classes of the sigmoid) overlaid
  on the images.
- `detection_pictures`: runs predictors (`keras_predictor(model)`, `LiteRTDetector(path)`) on the
  first images of a dataset and writes both PNGs.

Figures are drawn on matplotlib's Agg canvas (no display, no pyplot global state) and written
atomically, so a crash never leaves a half-written PNG.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont

from detection.centernet.centernet_decoder import Detections, decode_detections
from detection.data.coco_dataset import CocoDataset
from detection.data.pipeline import resized_boxes
from detection.evaluation import Predictor
from kd_keras.io import atomic_write_bytes

# One colour per model, in the order the models are given (RGB, matplotlib's tab10 without green).
MODEL_COLOURS = (
    (31, 119, 180),
    (255, 127, 14),
    (214, 39, 40),
    (148, 103, 189),
    (227, 119, 194),
    (23, 190, 207),
    (140, 86, 75),
    (188, 189, 34),
)
GROUND_TRUTH_COLOUR = (44, 160, 44)
# Grid panels are this many inches square at this resolution: a panel is 250x250 pixels.
PANEL_INCHES = 2.5
DPI = 100
_LEGEND_BACKGROUND = (255, 255, 255)
_LEGEND_ENTRIES = 3  # boxes listed per model in the legend; the rest are counted

BoxesLike = Detections | tuple[np.ndarray, np.ndarray, np.ndarray]
GroundTruth = np.ndarray | tuple[np.ndarray, np.ndarray]


def model_colour(index: int) -> tuple[int, int, int]:
    """The RGB colour of the `index`-th model (the palette repeats after 8 models)."""
    return MODEL_COLOURS[index % len(MODEL_COLOURS)]


def draw_detections(
    image_uint8_hwc: np.ndarray,
    boxes_by_model: Mapping[str, BoxesLike],
    class_names: Sequence[str],
    score_threshold: float = 0.3,
    *,
    ground_truth: GroundTruth | None = None,
    line_width: int = 1,
    legend: bool = True,
) -> np.ndarray:
    """The image with each model's boxes outlined in its colour, and a legend strip below.

    The ground truth is drawn first (in `GROUND_TRUTH_COLOUR`), then the models in the order of
    `boxes_by_model` (in `model_colour(i)`), so a later model's outline covers an earlier one
    where they coincide. Box corners are rounded to pixels; an outline runs along the first and
    last pixel rows and columns inside the box (`x_max`, `y_max` are exclusive edges), clipped to
    the image. Only the outline pixels of the image change; the legend goes in a strip below.

    Args:
        image_uint8_hwc: RGB image `[H, W, 3]`, uint8.
        boxes_by_model: `model name -> Detections` (or `(boxes, scores, classes)`), boxes as
            `x_min, y_min, x_max, y_max` in this image's pixels.
        class_names: names of the class indices, for the legend.
        score_threshold: boxes scoring below this are not drawn.
        ground_truth: boxes `[k, 4]`, or `(boxes, classes)`, in this image's pixels.
        line_width: outline width in pixels, drawn inwards from the box edge.
        legend: add the legend strip; `False` returns an image of the input's shape.

    Returns:
        uint8 `[H + legend height, max(W, legend width), 3]` (`[H, W, 3]` without the legend);
        its top-left `[H, W]` is the image with the outlines.

    Raises:
        ValueError: the image is not `[H, W, 3]` uint8.

    Example:
        >>> found = decode_detections(*keras_predictor(student)(images / 255.0))
        >>> picture = draw_detections(images[0], {"student": found[0]}, dataset.class_names)
    """
    image = np.asarray(image_uint8_hwc)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(
            "Expected an RGB uint8 image [H, W, 3]. Received: "
            f"shape={image.shape}, dtype={image.dtype}."
        )
    drawn = image.copy()
    entries = []
    if ground_truth is not None:
        boxes, classes = _ground_truth(ground_truth)
        for box in boxes:
            _outline(drawn, box, GROUND_TRUTH_COLOUR, line_width)
        entries.append(("ground truth", GROUND_TRUTH_COLOUR, _labels(classes, None, class_names)))
    for index, (name, value) in enumerate(boxes_by_model.items()):
        found = _kept(_as_detections(value), score_threshold)
        for box in found.boxes:
            _outline(drawn, box, model_colour(index), line_width)
        entries.append(
            (name, model_colour(index), _labels(found.classes, found.scores, class_names))
        )
    if not legend:
        return drawn
    return _with_legend(drawn, entries)


def save_detection_grid(
    path: str | os.PathLike,
    images: np.ndarray | Sequence[np.ndarray],
    ground_truth_boxes: Sequence[GroundTruth | None] | None,
    predictions: Mapping[str, Sequence[BoxesLike]],
    class_names: Sequence[str],
    max_images: int = 6,
    score_threshold: float = 0.3,
) -> Path:
    """A PNG grid of detections: one row per image, one column per model.

    Each panel is `PANEL_INCHES` square at `DPI` (250x250 pixels) and shows the image with the
    ground truth (green) and that model's boxes (in its `model_colour`), each box labelled with
    its class and score; so the PNG is `250 * models` pixels wide and `250 * rows` high.

    Args:
        path: the PNG to write (atomically).
        images: RGB uint8 images `[n, H, W, 3]`.
        ground_truth_boxes: per image, boxes `[k, 4]` or `(boxes, classes)` in the images'
            pixels, or `None` (for the list or an image) to draw no ground truth.
        predictions: `model name -> one Detections per image` (e.g. `decode_detections` output).
        class_names: names of the class indices.
        max_images: draw at most this many images (the first ones).
        score_threshold: boxes scoring below this are not drawn.

    Returns:
        `path`.

    Raises:
        ValueError: no model or no image, or a model with fewer predictions than images drawn.
    """
    images = _images(images, max_images)
    rows = len(images)
    _check_models(predictions, rows, "predictions")
    truth = list(ground_truth_boxes) if ground_truth_boxes is not None else []
    figure = _figure(rows, len(predictions))
    axes = figure.subplots(rows, len(predictions), squeeze=False)
    for column, (name, per_image) in enumerate(predictions.items()):
        colour = model_colour(column)
        for row, image in enumerate(images):
            axis = axes[row][column]
            found = _kept(_as_detections(per_image[row]), score_threshold)
            gt = truth[row] if row < len(truth) else None
            axis.imshow(
                draw_detections(image, {name: found}, class_names, ground_truth=gt, legend=False)
            )
            for box, score, label in zip(found.boxes, found.scores, found.classes):
                axis.text(
                    float(box[0]),
                    float(box[1]),
                    f"{_class_name(label, class_names)} {score:.2f}",
                    fontsize=6,
                    color="white",
                    verticalalignment="bottom",
                    bbox={"facecolor": _rgb(colour), "edgecolor": "none", "pad": 1},
                )
            axis.set_xticks([])
            axis.set_yticks([])
            axis.set_xlabel(f"{len(found)} box(es)", fontsize=7)
            if row == 0:
                axis.set_title(name, color=_rgb(colour), fontsize=9)
            if column == 0:
                axis.set_ylabel(f"image {row}", fontsize=8)
    figure.suptitle(f"score >= {score_threshold:g}; ground truth in green", fontsize=8)
    return _save(figure, path)


def save_heatmap_grid(
    path: str | os.PathLike,
    images: np.ndarray | Sequence[np.ndarray],
    heatmaps_by_model: Mapping[str, np.ndarray],
    max_images: int = 4,
    *,
    from_logits: bool = True,
) -> Path:
    """A PNG grid of heatmaps over the images: one row per image, one column per model.

    Each panel shows, over the image, the per-cell maximum over classes of the model's object
    probability (`sigmoid` of the heatmap logits), stretched to the image size, on a fixed 0-1
    colour scale so models compare at a glance. Panels are sized as in `save_detection_grid`.

    Args:
        path: the PNG to write (atomically).
        images: RGB uint8 images `[n, H, W, 3]`.
        heatmaps_by_model: `model name -> heatmap [n, H / stride, W / stride, classes]` (the
            first output of a predictor).
        max_images: draw at most this many images (the first ones).
        from_logits: the heatmaps are logits (predictor outputs); `False` for probabilities.

    Returns:
        `path`.

    Raises:
        ValueError: no model or no image, or a heatmap that is not `[n, h, w, classes]` with
            at least as many maps as images drawn.
    """
    images = _images(images, max_images)
    rows = len(images)
    _check_models(heatmaps_by_model, rows, "heatmaps_by_model")
    figure = _figure(rows, len(heatmaps_by_model))
    axes = figure.subplots(rows, len(heatmaps_by_model), squeeze=False)
    for column, (name, heatmap) in enumerate(heatmaps_by_model.items()):
        heatmap = np.asarray(heatmap, np.float32)
        if heatmap.ndim != 4:
            raise ValueError(
                f"Expected heatmaps [n, h, w, classes] for model {name!r}. Received: "
                f"shape={heatmap.shape}."
            )
        probability = _sigmoid(heatmap) if from_logits else heatmap
        strongest = probability[:rows].max(axis=-1)
        for row, image in enumerate(images):
            axis = axes[row][column]
            height, width = image.shape[:2]
            axis.imshow(image)
            shown = axis.imshow(
                strongest[row],
                cmap="magma",
                vmin=0.0,
                vmax=1.0,
                alpha=0.6,
                extent=(0, width, height, 0),
                interpolation="nearest",
            )
            axis.set_xticks([])
            axis.set_yticks([])
            axis.set_xlabel(f"max {strongest[row].max():.2f}", fontsize=7)
            if row == 0:
                axis.set_title(name, color=_rgb(model_colour(column)), fontsize=9)
            if column == 0:
                axis.set_ylabel(f"image {row}", fontsize=8)
    figure.colorbar(shown, ax=axes, shrink=0.6, label="max over classes of sigmoid(heatmap)")
    return _save(figure, path)


def detection_pictures(
    output_dir: str | os.PathLike,
    predictors: Mapping[str, Predictor],
    dataset: CocoDataset,
    images_uint8: np.ndarray,
    image_size: tuple[int, int],
    max_images: int = 6,
    score_threshold: float = 0.3,
) -> dict[str, Path]:
    """Runs each predictor on the first images and writes the detection and heatmap grids.

    Args:
        output_dir: where `detections.png` and `heatmaps.png` go.
        predictors: `model name -> Predictor` (`keras_predictor(model)`, `LiteRTDetector`...):
            float32 images in [0, 1] to `(heatmap_logits, size, offset)`.
        dataset: the images' dataset, for the ground truth and the class names.
        images_uint8: the dataset's images resized to `image_size` (`load_images` output), in
            `dataset.records` order.
        image_size: the network input `(height, width)`.
        max_images: pictures of at most this many images (the first ones).
        score_threshold: boxes scoring below this are not drawn.

    Returns:
        `{"detections": path, "heatmaps": path}`.

    Raises:
        ValueError: no predictor, or images that do not match `image_size` or the dataset.

    Example:
        >>> pictures = detection_pictures(
        ...     "runs/detect", {"teacher": keras_predictor(teacher),
        ...                     "int8": LiteRTDetector("runs/detect/student_int8.tflite")},
        ...     val, load_images(val, (128, 128)), (128, 128))
        >>> session.finish(config, report, artifacts, headline="AP", images=pictures)
    """
    images = np.asarray(images_uint8)
    if images.ndim != 4 or tuple(images.shape[1:3]) != tuple(image_size):
        raise ValueError(
            f"Expected images [n, {image_size[0]}, {image_size[1]}, 3] (resized to image_size). "
            f"Received: shape={images.shape}, image_size={tuple(image_size)}."
        )
    if len(images) > len(dataset):
        raise ValueError(
            "Expected at most one image per dataset record (images in `dataset.records` order). "
            f"Received: {len(images)} images for {len(dataset)} records."
        )
    if not predictors:
        raise ValueError("Expected at least one predictor. Received: predictors={}.")
    images = images[:max_images]
    batch = images.astype(np.float32) / 255.0
    truth = [
        (resized_boxes(record, image_size), record.classes)
        for record in dataset.records[: len(images)]
    ]
    predictions, heatmaps = {}, {}
    for name, predictor in predictors.items():
        heatmap, size, offset = (np.asarray(o, np.float32) for o in predictor(batch)[:3])
        stride = image_size[0] // heatmap.shape[1]
        predictions[name] = decode_detections(
            heatmap, size, offset, stride, score_threshold=score_threshold
        )
        heatmaps[name] = heatmap
    output_dir = Path(output_dir)
    return {
        "detections": save_detection_grid(
            output_dir / "detections.png",
            images,
            truth,
            predictions,
            dataset.class_names,
            max_images,
            score_threshold,
        ),
        "heatmaps": save_heatmap_grid(output_dir / "heatmaps.png", images, heatmaps, max_images),
    }


# === Internals ===


def _as_detections(value: BoxesLike) -> Detections:
    if isinstance(value, Detections):
        return value
    try:
        boxes, scores, classes = value
    except (TypeError, ValueError):
        raise ValueError(
            "Expected a Detections or a (boxes, scores, classes) tuple. "
            f"Received: value of type {type(value).__name__}."
        ) from None
    return Detections(
        np.asarray(boxes, np.float32).reshape(-1, 4),
        np.asarray(scores, np.float32).reshape(-1),
        np.asarray(classes, np.int64).reshape(-1),
    )


def _kept(found: Detections, score_threshold: float) -> Detections:
    keep = np.asarray(found.scores) >= score_threshold
    return Detections(
        np.asarray(found.boxes).reshape(-1, 4)[keep],
        np.asarray(found.scores)[keep],
        np.asarray(found.classes)[keep],
    )


def _ground_truth(value: GroundTruth) -> tuple[np.ndarray, np.ndarray | None]:
    if isinstance(value, tuple):
        boxes, classes = value
        return np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(classes).reshape(-1)
    return np.asarray(value, np.float32).reshape(-1, 4), None


def _outline(image: np.ndarray, box: np.ndarray, colour, line_width: int) -> None:
    """Sets the outline pixels of `box` (exclusive max edges) in place, clipped to the image."""
    height, width = image.shape[:2]
    left, top = int(round(float(box[0]))), int(round(float(box[1])))
    right, bottom = int(round(float(box[2]))) - 1, int(round(float(box[3]))) - 1
    if right < 0 or bottom < 0 or left >= width or top >= height:
        return  # entirely outside the image
    left, top = max(left, 0), max(top, 0)
    right, bottom = min(max(right, left), width - 1), min(max(bottom, top), height - 1)
    w = max(int(line_width), 1)
    image[top : min(top + w, bottom + 1), left : right + 1] = colour
    image[max(bottom - w + 1, top) : bottom + 1, left : right + 1] = colour
    image[top : bottom + 1, left : min(left + w, right + 1)] = colour
    image[top : bottom + 1, max(right - w + 1, left) : right + 1] = colour


def _class_name(label, class_names: Sequence[str]) -> str:
    label = int(label)
    return class_names[label] if 0 <= label < len(class_names) else str(label)


def _labels(classes, scores, class_names: Sequence[str]) -> str:
    if classes is None:
        return ""
    names = [_class_name(c, class_names) for c in classes]
    if scores is not None:
        names = [f"{n} {s:.2f}" for n, s in zip(names, scores)]
    text = ", ".join(names[:_LEGEND_ENTRIES])
    if len(names) > _LEGEND_ENTRIES:
        text += f", +{len(names) - _LEGEND_ENTRIES} more"
    return text or "no box"


def _with_legend(image: np.ndarray, entries: list[tuple[str, tuple, str]]) -> np.ndarray:
    """`image` above a strip with one `colour swatch  name: boxes` line per entry."""
    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines = [f"{name}: {labels}" if labels else name for name, _, labels in entries]
    ascent = max((measure.textbbox((0, 0), line, font=font)[3] for line in lines), default=0)
    line_height = max(ascent, 8) + 4
    swatch = line_height - 4
    text_width = max(
        (int(np.ceil(measure.textlength(line, font=font))) for line in lines), default=0
    )
    width = max(image.shape[1], swatch + 6 + text_width + 2)
    height = image.shape[0] + line_height * len(entries) + 2
    canvas = Image.new("RGB", (width, height), _LEGEND_BACKGROUND)
    canvas.paste(Image.fromarray(image), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for index, ((_, colour, _), line) in enumerate(zip(entries, lines)):
        y = image.shape[0] + 2 + index * line_height
        draw.rectangle((2, y, 2 + swatch - 1, y + swatch - 1), fill=tuple(colour))
        draw.text((swatch + 6, y), line, fill=(0, 0, 0), font=font)
    return np.asarray(canvas)


def _images(images, max_images: int) -> list[np.ndarray]:
    images = list(images)
    chosen = [np.asarray(image) for image in images[: max(int(max_images), 0)]]
    if not chosen:
        raise ValueError(
            f"Expected at least one image and max_images >= 1. Received: {len(images)} images, "
            f"max_images={max_images}."
        )
    return chosen


def _check_models(by_model: Mapping, rows: int, argument: str) -> None:
    if not by_model:
        raise ValueError(f"Expected at least one model. Received: {argument}={{}}.")
    short = {name: len(v) for name, v in by_model.items() if len(v) < rows}
    if short:
        raise ValueError(
            f"Expected one entry per image drawn ({rows}) for every model. "
            f"Received: {argument} lengths {short}."
        )


def _figure(rows: int, columns: int) -> Figure:
    # A fixed size (no "tight" bounding box) keeps the PNG at PANEL_INCHES * DPI per panel;
    # the constrained layout fits titles, labels and the colour bar inside it.
    figure = Figure(
        figsize=(PANEL_INCHES * columns, PANEL_INCHES * rows), dpi=DPI, layout="constrained"
    )
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: str | os.PathLike) -> Path:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return atomic_write_bytes(path, buffer.getvalue())


def _rgb(colour) -> tuple[float, float, float]:
    return tuple(c / 255.0 for c in colour)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60.0, 60.0)))


__all__ = [
    "DPI",
    "GROUND_TRUTH_COLOUR",
    "MODEL_COLOURS",
    "PANEL_INCHES",
    "detection_pictures",
    "draw_detections",
    "model_colour",
    "save_detection_grid",
    "save_heatmap_grid",
]
