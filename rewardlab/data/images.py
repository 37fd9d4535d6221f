"""Image–caption pairs: read from a folder or a data file, or generated (rendered shapes), and batched.

Sources (``train_data`` / ``eval_data`` of a CLIP or SigLIP recipe):

- ``shapes:N`` or ``shapes:N:seed=S``: N generated images of one shape each — circle, square, triangle or cross, in
  one of six colours, small or large, in one of nine places — captioned like "a small red circle in the top left"
  (a caption leaves out the size or the place 30% of the time each) and labelled with their class ("red circle",
  24 classes) for zero-shot evaluation. Deterministic from the seed
  (default 0); rendered with numpy at the recipe's image size, nothing is written to disk.
- a folder: every image file (``.png``, ``.jpg``, …) with its caption in the ``.txt`` file of the same stem.
- a ``.jsonl``, ``.json``, ``.csv`` or ``.parquet`` file of ``{"image": path, "caption": str}`` rows (``"label"``
  optional), paths relative to the file's folder, under the rules of :mod:`rewardlab.data.rows`.

Image files are read when batched (needs Pillow), centre-cropped to a square and resized.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rewardlab.data.rows import FILE_SUFFIXES, iter_rows, optional_text, read_text, text
from rewardlab.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (50, 90, 235),
    "yellow": (235, 215, 40), "purple": (150, 60, 200), "orange": (245, 135, 25),
}
SIZES = {"small": (0.07, 0.10), "large": (0.13, 0.16)}  # radius range, as a fraction of the image side
# Row and column of the 3×3 grid cell, and how the caption says it.
PLACES = {
    (0, 0): "in the top left", (0, 1): "at the top", (0, 2): "in the top right",
    (1, 0): "on the left", (1, 1): "in the centre", (1, 2): "on the right",
    (2, 0): "in the bottom left", (2, 1): "at the bottom", (2, 2): "in the bottom right",
}
CAPTION_DETAIL = 0.7  # how often a caption says the size, and (independently) the place
SHAPE_CLASSES = tuple(f"{colour} {shape}" for shape in SHAPES for colour in COLOURS)
# Zero-shot prompts; a class's text embedding is the mean over these (Radford et al.'s prompt ensembling).
PROMPT_TEMPLATES = ("a photo of a {}", "a {}")
SHAPES_SPEC = re.compile(r"shapes:(\d+)(?::seed=(\d+))?")


class ImageDataError(DataError):
    """An image–caption source is malformed; the message names the file (and line)."""


@dataclass
class ImageCaption:
    """One pair: the image (an (h, w, 3) uint8 array, or a file read when batched), its caption and, for zero-shot
    evaluation, its class name."""

    image: np.ndarray | Path
    caption: str
    label: str | None = None


def read_image_captions(source: str, image_size: int) -> list[ImageCaption]:
    """Pairs from ``source``: ``shapes:N[:seed=S]``, a folder, or a data file (see the module docstring)."""
    if source.startswith("shapes"):
        match = SHAPES_SPEC.fullmatch(source)
        if not match:
            raise ImageDataError(f"generated data is written shapes:N or shapes:N:seed=S (e.g. shapes:2000:seed=0), "
                                 f"got {source!r}")
        return generate_shapes(int(match[1]), int(match[2] or 0), image_size)
    path = Path(source)
    if path.is_dir():
        return read_folder(path)
    if path.suffix.lower() in FILE_SUFFIXES and path.is_file():
        return read_rows(source)
    raise ImageDataError(f"image–caption data {source!r}: expected a folder of images with .txt captions, a "
                         f"{', '.join(FILE_SUFFIXES)} file, or shapes:N[:seed=S]"
                         + ("" if path.exists() else " (no such file or folder)"))


def read_folder(folder: Path) -> list[ImageCaption]:
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise ImageDataError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    pairs = []
    for image in images:
        caption_file = image.with_suffix(".txt")
        if not caption_file.is_file():
            raise ImageDataError(f"{image}: no caption file {caption_file.name} beside it")
        caption = read_text(caption_file, str(caption_file)).strip()
        if not caption:
            raise ImageDataError(f"{caption_file}: empty caption")
        pairs.append(ImageCaption(image, caption))
    return pairs


def read_rows(source: str) -> list[ImageCaption]:
    """``{"image": path, "caption": str, "label": optional str}`` rows, paths relative to the file's folder."""
    pairs = []
    for row, origin in iter_rows(source):
        image_name, caption = text(row, "image", origin), text(row, "caption", origin)
        image = Path(source).parent / image_name
        if not image.is_file():
            raise ImageDataError(f"{origin}: image file not found: {image}")
        pairs.append(ImageCaption(image, caption.strip(), optional_text(row, "label", origin)))
    if not pairs:
        raise ImageDataError(f"{source}: no image–caption rows")
    return pairs


def render_shape(shape: str, colour: str, size: str, place: tuple[int, int], image_size: int,
                 rng: np.random.Generator) -> np.ndarray:
    """One (image_size, image_size, 3) uint8 image: a shape on a dark, noisy background, jittered in radius,
    position and colour."""
    radius = rng.uniform(*SIZES[size])
    cy, cx = ((np.array(place) + 0.5) / 3 + rng.uniform(-0.03, 0.03, 2))
    coords = (np.arange(image_size) + 0.5) / image_size
    dy, dx = coords[:, None] - cy, coords[None, :] - cx
    if shape == "circle":
        mask = dx**2 + dy**2 <= radius**2
    elif shape == "square":
        mask = np.maximum(abs(dx), abs(dy)) <= 0.85 * radius
    elif shape == "triangle":  # apex up, base 0.7·r below the centre
        mask = (dy >= -radius) & (dy <= 0.7 * radius) & (abs(dx) <= (dy + radius) / 1.7)
    elif shape == "cross":
        arm = radius / 3
        mask = ((abs(dx) <= arm) & (abs(dy) <= radius)) | ((abs(dy) <= arm) & (abs(dx) <= radius))
    else:
        raise ValueError(f"unknown shape {shape!r}; choose one of: {', '.join(SHAPES)}")
    background = rng.uniform(15, 90) + rng.normal(0, 6, (image_size, image_size, 1))
    image = np.repeat(background, 3, axis=2)
    image[mask] = np.array(COLOURS[colour]) + rng.uniform(-20, 20, 3)
    return np.clip(image, 0, 255).astype(np.uint8)


def generate_shapes(n: int, seed: int = 0, image_size: int = 64) -> list[ImageCaption]:
    """``n`` rendered shapes with captions and class labels, the same for the same seed."""
    rng = np.random.default_rng(seed)
    places, sizes, colours = list(PLACES), list(SIZES), list(COLOURS)
    pairs = []
    for _ in range(n):
        shape, colour, size = SHAPES[rng.integers(len(SHAPES))], colours[rng.integers(6)], sizes[rng.integers(2)]
        place = places[rng.integers(len(places))]
        image = render_shape(shape, colour, size, place, image_size, rng)
        # Like real captions, some leave out the size or the place.
        said_size, said_place = rng.random(2) < CAPTION_DETAIL
        caption = f"a {size + ' ' if said_size else ''}{colour} {shape}{' ' + PLACES[place] if said_place else ''}"
        pairs.append(ImageCaption(image, caption, f"{colour} {shape}"))
    return pairs


def load_pixels(image: np.ndarray | Path, image_size: int) -> torch.Tensor:
    """(3, image_size, image_size) floats in [0, 1]: centre-cropped to a square, then resized."""
    if isinstance(image, Path):
        try:
            from PIL import Image
        except ImportError:
            raise ModuleNotFoundError("reading image files needs Pillow: pip install pillow") from None
        try:
            with Image.open(image) as file:
                image = np.array(file.convert("RGB"))
        except OSError as e:  # PIL's UnidentifiedImageError, a truncated file, no permission
            raise ImageDataError(f"{image}: not a readable image ({e})") from None
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    pixels = torch.from_numpy(np.ascontiguousarray(image[top : top + side, left : left + side])).permute(2, 0, 1)
    pixels = pixels.float() / 255
    if side != image_size:
        pixels = F.interpolate(pixels[None], size=(image_size, image_size), mode="bilinear", antialias=True,
                               align_corners=False)[0].clamp(0, 1)
    return pixels


@dataclass
class ImageTextBatch:
    """b image–caption pairs. Shape notation: b = pairs, s = caption tokens (right-padded).

    - ``pixel_values``: (b, 3, h, w) in [0, 1]
    - ``input_ids``, ``attention_mask``: (b, s)
    """

    pixel_values: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor

    def to(self, device) -> ImageTextBatch:
        return ImageTextBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def inputs(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class ImageTextCollator:
    """A list of :class:`ImageCaption` → :class:`ImageTextBatch`: pixels loaded and resized, captions tokenized."""

    def __init__(self, tokenizer, image_size: int, max_length: int):
        self.tokenizer, self.image_size, self.max_length = tokenizer, image_size, max_length

    def __call__(self, pairs: list[ImageCaption]) -> ImageTextBatch:
        tokens = self.tokenizer([p.caption for p in pairs], padding=True, truncation=True,
                                max_length=self.max_length, return_tensors="pt")
        return ImageTextBatch(torch.stack([load_pixels(p.image, self.image_size) for p in pairs]),
                              tokens["input_ids"], tokens["attention_mask"])
