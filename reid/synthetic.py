"""A built-in, deterministic person re-identification dataset in the Market-1501 layout.

Each identity has a fixed appearance: shirt and trouser colours, a shirt pattern (plain, stripes,
checks), skin and hair tones, a bag or not, and body proportions. Each camera has its own lighting
(gain and colour cast), background, viewpoint (front, back or side, mirrored or not), scale and
blur, and every image adds a little pose, position and sensor noise. Identities are seen by several
cameras, so matching across cameras needs the appearance, not the camera's look.

The dataset is written as JPEG files with Market-1501 names, junk (`-1`) and distractor (`0000`)
images in the gallery, so `reid.market1501.load_market1501` reads it like the real dataset.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from reid.market1501 import SPLITS, ImageName

MARKER = "dataset.json"  # the settings the folder was written with
UNLABELED = "unlabeled"  # the folder of unlabelled crops

_PATTERNS = ("plain", "horizontal", "vertical", "checks")
_VIEWS = ("front", "back", "side")


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """Size of the generated dataset.

    Attributes:
        train_identities: identities in `bounding_box_train`.
        test_identities: identities in `query` and `bounding_box_test` (disjoint from training).
        cameras: number of cameras (Market-1501 has 6).
        cameras_per_identity: cameras that see each identity (>= 2, <= cameras).
        images_per_camera: images of an identity per camera in train and gallery.
        junk: junk (`-1`) images in the gallery.
        distractors: distractor (`0000`) images in the gallery.
        image_size: `(height, width)` of the written images.
        unlabeled: unlabelled images in `unlabeled/`: training identities under any camera,
            as a robot's frames would show them; no name carries an identity or a camera.
        seed: the same seed writes the same bytes (the labelled ones whatever `unlabeled` is).
    """

    train_identities: int = 64
    test_identities: int = 160
    cameras: int = 6
    cameras_per_identity: int = 3
    images_per_camera: int = 3
    junk: int = 12
    distractors: int = 24
    image_size: tuple[int, int] = (64, 32)
    unlabeled: int = 0
    seed: int = 0

    def __post_init__(self):
        if self.unlabeled < 0:
            raise ValueError(f"Expected unlabeled >= 0. Received: unlabeled={self.unlabeled!r}.")
        for key in ("train_identities", "test_identities", "images_per_camera"):
            if getattr(self, key) < 1:
                raise ValueError(f"Expected {key} >= 1. Received: {key}={getattr(self, key)!r}.")
        if not 2 <= self.cameras_per_identity <= self.cameras <= 9:
            raise ValueError(
                "Expected 2 <= cameras_per_identity <= cameras <= 9 (each query needs a match "
                f"from another camera). Received: cameras={self.cameras}, "
                f"cameras_per_identity={self.cameras_per_identity}."
            )
        total = self.train_identities + self.test_identities
        if total > 9998:
            raise ValueError(
                "At most 9998 identities fit 4-digit ids. "
                f"Received: train_identities + test_identities={total}."
            )
        if min(self.image_size) < 8:
            raise ValueError(f"Expected image_size >= (8, 8). Received: {self.image_size!r}.")


@dataclasses.dataclass(frozen=True)
class _Person:
    shirt: tuple[int, int, int]
    shirt_second: tuple[int, int, int]
    pattern: str
    trousers: tuple[int, int, int]
    shoes: tuple[int, int, int]
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    bag: tuple[int, int, int] | None
    height: float
    width: float
    torso: float
    short_sleeves: bool


@dataclasses.dataclass(frozen=True)
class _Camera:
    gain: np.ndarray
    background: tuple[int, int, int]
    texture: str
    view: str
    mirror: bool
    scale: float
    blur: float


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(20, 236, size=3))


def _person(rng: np.random.Generator) -> _Person:
    skin_base = rng.uniform(0.35, 1.0)
    return _Person(
        shirt=_colour(rng),
        shirt_second=_colour(rng),
        pattern=str(rng.choice(_PATTERNS)),
        trousers=_colour(rng),
        shoes=tuple(int(v) for v in rng.integers(10, 120, size=3)),
        skin=tuple(int(v * skin_base) for v in (235, 190, 160)),
        hair=tuple(int(v) for v in rng.integers(10, 140, size=3)),
        bag=_colour(rng) if rng.random() < 0.4 else None,
        height=float(rng.uniform(0.78, 0.95)),
        width=float(rng.uniform(0.32, 0.5)),
        torso=float(rng.uniform(0.36, 0.46)),
        short_sleeves=bool(rng.random() < 0.5),
    )


def _camera(rng: np.random.Generator) -> _Camera:
    return _Camera(
        gain=rng.uniform(0.65, 1.3) * rng.uniform(0.85, 1.15, size=3),
        background=_colour(rng),
        texture=str(rng.choice(("flat", "floor", "wall", "noise"))),
        view=str(rng.choice(_VIEWS)),
        mirror=bool(rng.random() < 0.5),
        scale=float(rng.uniform(0.8, 1.0)),
        blur=float(rng.uniform(0.0, 1.2)),
    )


def _background(draw: ImageDraw.ImageDraw, camera: _Camera, size, rng) -> None:
    w, h = size
    base = np.array(camera.background)
    draw.rectangle([0, 0, w, h], fill=tuple(int(v) for v in base))
    if camera.texture == "floor":
        draw.rectangle([0, int(h * 0.7), w, h], fill=tuple(int(v) for v in base * 0.6))
    elif camera.texture == "wall":
        for x in range(0, w, max(4, w // 5)):
            draw.line([x, 0, x, h], fill=tuple(int(v) for v in base * 0.75), width=2)
    elif camera.texture == "noise":
        for _ in range(12):
            x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
            r = int(rng.integers(2, max(3, w // 6)))
            shade = tuple(int(np.clip(v, 0, 255)) for v in base * rng.uniform(0.6, 1.3))
            draw.ellipse([x - r, y - r, x + r, y + r], fill=shade)


def _stripes(draw, box, person: _Person, vertical: bool, step: int) -> None:
    x0, y0, x1, y1 = box
    if vertical:
        for x in range(int(x0), int(x1), 2 * step):
            draw.rectangle([x, y0, min(x + step - 1, x1), y1], fill=person.shirt_second)
    else:
        for y in range(int(y0), int(y1), 2 * step):
            draw.rectangle([x0, y, x1, min(y + step - 1, y1)], fill=person.shirt_second)


def _figure(draw, person: _Person, camera: _Camera, size, rng) -> None:
    """Head, hair, torso with pattern and arms, legs, shoes and an optional bag."""
    w, h = size
    height = h * person.height * camera.scale * rng.uniform(0.95, 1.05)
    body_w = w * person.width * (0.7 if camera.view == "side" else 1.0)
    cx = w / 2 + rng.uniform(-0.06, 0.06) * w
    top = h - height - rng.uniform(0.0, 0.05) * h
    head_h = height * 0.14
    torso_h = height * person.torso
    legs_h = height - head_h - torso_h
    head_w = head_h * 0.8
    head = [cx - head_w / 2, top, cx + head_w / 2, top + head_h]
    torso = [cx - body_w / 2, top + head_h, cx + body_w / 2, top + head_h + torso_h]
    # The bag hangs behind the person: seen whole from the back, as a strap from the front.
    if person.bag is not None and camera.view == "side":
        bx = torso[0] - body_w * 0.25
        draw.rectangle(
            [bx, torso[1] + torso_h * 0.1, torso[0] + 2, torso[3] - torso_h * 0.3], fill=person.bag
        )
    arm_w = body_w * 0.2
    sleeve = torso_h * (0.45 if person.short_sleeves else 0.95)
    for side in (-1, 1):
        ax = cx + side * (body_w / 2 + arm_w / 2)
        arm = [ax - arm_w / 2, torso[1], ax + arm_w / 2, torso[1] + torso_h]
        draw.rectangle(arm, fill=person.skin)
        draw.rectangle([arm[0], arm[1], arm[2], arm[1] + sleeve], fill=person.shirt)
    draw.rectangle(torso, fill=person.shirt)
    step = max(1, int(torso_h / 6))
    if person.pattern == "horizontal":
        _stripes(draw, torso, person, False, step)
    elif person.pattern == "vertical":
        _stripes(draw, torso, person, True, max(1, int(body_w / 6)))
    elif person.pattern == "checks":
        cell = max(2, int(body_w / 4))
        for i, x in enumerate(range(int(torso[0]), int(torso[2]), cell)):
            for j, y in enumerate(range(int(torso[1]), int(torso[3]), cell)):
                if (i + j) % 2:
                    draw.rectangle(
                        [x, y, min(x + cell - 1, torso[2]), min(y + cell - 1, torso[3])],
                        fill=person.shirt_second,
                    )
    if person.bag is not None and camera.view == "back":
        draw.rectangle(
            [
                cx - body_w * 0.35,
                torso[1] + torso_h * 0.1,
                cx + body_w * 0.35,
                torso[3] - torso_h * 0.2,
            ],
            fill=person.bag,
        )
    elif person.bag is not None and camera.view == "front":
        draw.line([torso[0] + 1, torso[1], torso[2] - 1, torso[3] - 1], fill=person.bag, width=2)
    spread = rng.uniform(0.0, 0.25) * body_w
    leg_w = body_w * 0.42
    legs_top = torso[3]
    for side in (-1, 1):
        lx = cx + side * (body_w / 4 + spread / 2)
        draw.rectangle(
            [lx - leg_w / 2, legs_top, lx + leg_w / 2, legs_top + legs_h * 0.92],
            fill=person.trousers,
        )
        draw.rectangle(
            [lx - leg_w / 2, legs_top + legs_h * 0.92, lx + leg_w / 2 + 1, legs_top + legs_h],
            fill=person.shoes,
        )
    draw.ellipse(head, fill=person.skin)
    hair_depth = head_h * (0.9 if camera.view == "back" else 0.35)
    draw.chord([head[0], head[1], head[2], head[1] + 2 * hair_depth], 180, 360, fill=person.hair)


def _render(person: _Person | None, camera: _Camera, size: tuple[int, int], rng, crop=False):
    """One image at `size = (height, width)`; drawn at 2× and downsampled (anti-aliasing)."""
    height, width = size
    canvas = (2 * width, 2 * height)
    image = Image.new("RGB", canvas)
    draw = ImageDraw.Draw(image)
    _background(draw, camera, canvas, rng)
    if person is not None:
        _figure(draw, person, camera, canvas, rng)
    if camera.mirror:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    if crop:  # junk: a badly cropped fragment of a person
        x0, y0 = int(rng.integers(0, canvas[0] // 2)), int(rng.integers(0, canvas[1] // 2))
        image = image.crop((x0, y0, x0 + canvas[0] // 2, y0 + canvas[1] // 3)).resize(canvas)
    blur = camera.blur + rng.uniform(0.0, 0.4)
    if blur > 0.05:
        image = image.filter(ImageFilter.GaussianBlur(blur))
    pixels = np.asarray(image, np.float32) * camera.gain * rng.uniform(0.9, 1.1)
    pixels += rng.normal(0.0, 6.0, size=pixels.shape)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    return image.resize((width, height), Image.BILINEAR)


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def write_synthetic_market1501(
    root: str | os.PathLike, config: SyntheticConfig = SyntheticConfig()
) -> Path:
    """Writes the dataset to `root` (which must not exist) and returns its path.

    The folder appears complete or not at all: images go to a temporary folder beside `root`
    that is renamed into place at the end.

    Layout: `bounding_box_train` has `images_per_camera` images per camera of each training
    identity; each test identity has one `query` image per camera that sees it and
    `images_per_camera` gallery images per camera (same-camera gallery images are excluded at
    evaluation time). The gallery also holds `distractors` (`0000`, background only) and `junk`
    (`-1`, badly cropped fragments).
    """
    root = Path(root)
    if root.exists():
        raise FileExistsError(
            f"Refusing to overwrite an existing folder. Remove it or choose another path. "
            f"Received: root={str(root)!r}."
        )
    rng = np.random.default_rng(config.seed)
    cameras = [_camera(rng) for _ in range(config.cameras)]
    total = config.train_identities + config.test_identities
    people = [_person(rng) for _ in range(total)]
    # Market-1501-like ids: spread over 1..9999, train and test disjoint.
    ids = sorted(rng.choice(np.arange(1, 10000), size=total, replace=False).tolist())
    order = rng.permutation(total)
    train_ids = sorted(ids[i] for i in order[: config.train_identities])
    test_ids = sorted(ids[i] for i in order[config.train_identities :])
    appearance = {pid: people[i] for i, pid in enumerate(ids)}
    frames = [0] * (config.cameras + 1)

    def name(pid: int, camera: int) -> str:
        frames[camera] += int(rng.integers(1, 40))
        return ImageName(pid, camera, 1, frames[camera], 1).filename()

    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}."))
    try:
        for split in SPLITS:
            (staging / split).mkdir()

        def write(split: str, pid: int, camera: int, image: Image.Image) -> None:
            (staging / split / name(pid, camera)).write_bytes(_jpeg(image))

        for split_ids, is_test in ((train_ids, False), (test_ids, True)):
            for pid in split_ids:
                seen = rng.choice(config.cameras, size=config.cameras_per_identity, replace=False)
                for cam_index in sorted(seen.tolist()):
                    camera, cam = cameras[cam_index], cam_index + 1
                    if is_test:
                        image = _render(appearance[pid], camera, config.image_size, rng)
                        write("query", pid, cam, image)
                    for _ in range(config.images_per_camera):
                        image = _render(appearance[pid], camera, config.image_size, rng)
                        write(
                            "bounding_box_test" if is_test else "bounding_box_train",
                            pid,
                            cam,
                            image,
                        )
        for _ in range(config.distractors):
            cam_index = int(rng.integers(config.cameras))
            image = _render(None, cameras[cam_index], config.image_size, rng)
            write("bounding_box_test", 0, cam_index + 1, image)
        for _ in range(config.junk):
            cam_index = int(rng.integers(config.cameras))
            pid = test_ids[int(rng.integers(len(test_ids)))]
            image = _render(appearance[pid], cameras[cam_index], config.image_size, rng, crop=True)
            write("bounding_box_test", -1, cam_index + 1, image)
        if config.unlabeled:
            people = [appearance[pid] for pid in train_ids]
            _write_unlabeled(staging / UNLABELED, config, cameras, people)
        (staging / MARKER).write_text(json.dumps(_settings(config)) + "\n")
        os.replace(staging, root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return root


def _write_unlabeled(folder: Path, config: SyntheticConfig, cameras, people) -> None:
    """`config.unlabeled` crops of the training people, each under a random camera."""
    # A generator of its own: the labelled images stay the same bytes with or without these.
    rng = np.random.default_rng([config.seed, 1])
    folder.mkdir()
    for index in range(config.unlabeled):
        person = people[int(rng.integers(len(people)))]
        camera = cameras[int(rng.integers(len(cameras)))]
        image = _render(person, camera, config.image_size, rng)
        (folder / f"frame_{index:05d}.jpg").write_bytes(_jpeg(image))


def _settings(config: SyntheticConfig) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(config)))


def ensure_synthetic_market1501(
    root: str | os.PathLike, config: SyntheticConfig = SyntheticConfig()
) -> Path:
    """Returns `root`, holding the dataset of `config`.

    The dataset is written when `root` does not exist, and written again (then swapped in) when
    `root` holds a built-in dataset made with other settings, as recorded in its `dataset.json`.
    """
    root = Path(root)
    if not root.exists():
        return write_synthetic_market1501(root, config)
    marker = root / MARKER
    if marker.is_file() and json.loads(marker.read_text()) == _settings(config):
        return root
    fresh = write_synthetic_market1501(root.with_name(f".{root.name}.new"), config)
    stale = root.with_name(f".{root.name}.old")
    shutil.rmtree(stale, ignore_errors=True)
    os.replace(root, stale)
    os.replace(fresh, root)
    shutil.rmtree(stale, ignore_errors=True)
    return root
