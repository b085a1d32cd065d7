"""`photos`: natural colour photographs that installed packages ship, cut into square crops; one class per photograph.

No download: the ten photographs are files inside the scikit-learn, matplotlib and scikit-image wheels (read from the
installed packages with PIL; nothing is imported from them, and scikit-image's own downloader is never used).
`pip install "hf-specdec[photos]"` installs matplotlib and scikit-image. Licences, as the packages state them:

| class | package file | licence / credit |
| --- | --- | --- |
| china | scikit-learn `datasets/images/china.jpg` | CC BY 2.0, danielbuechele (Flickr), per the package's README.txt |
| flower | scikit-learn `datasets/images/flower.jpg` | CC BY 2.0, vultilion (Flickr), per the package's README.txt |
| grace_hopper | matplotlib `mpl-data/sample_data/grace_hopper.jpg` | U.S. Navy portrait of Grace Hopper: public domain as a work of the U.S. federal government (the package states no licence for it) |
| astronaut | scikit-image `data/astronaut.png` | NASA, public domain (`skimage.data.astronaut`) |
| chelsea | scikit-image `data/chelsea.png` | CC0, Stefan van der Walt (`skimage.data.chelsea`) |
| coffee | scikit-image `data/coffee.png` | CC0, Rachel Michetti (`skimage.data.coffee`) |
| hubble_deep_field | scikit-image `data/hubble_deep_field.jpg` | NASA, public domain (`skimage.data.hubble_deep_field`) |
| rocket | scikit-image `data/rocket.jpg` | SpaceX, public domain (`skimage.data.rocket`) |
| retina | scikit-image `data/retina.jpg` | CC0, Mikael Häggström (`skimage.data.retina`) |
| immunohistochemistry | scikit-image `data/ihc.png` | no known copyright restrictions (`skimage.data.immunohistochemistry`) |

Left out: scikit-image's grey-level images, its Middlebury stereo pair (no licence stated) and logos/drawings.

Crops: for photograph `c`, crop `i` is a square whose side is a fraction `u ~ U(min_scale, max_scale)` of the
photograph's shorter side, at a uniformly random position, drawn from `numpy.random.default_rng([seed, c])` and
resized with PIL's antialiasing bicubic filter. The boxes do not depend on `resolution`, so the 32x32 and the 64x64
datasets hold the same crops. Crops of one photograph overlap: the validation and test crops are new views of the
training photographs, not new photographs.
"""

import hashlib
import importlib.util
import os
import warnings
from dataclasses import dataclass

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value
from PIL import Image as PILImage

from ..models.configuration_vqgpt import _is_number


@dataclass(frozen=True)
class Photograph:
    name: str
    package: str  # import name of the package that ships the file
    path: str  # relative to the package's directory
    sha256: str  # first 16 hex digits of the file's SHA-256 in the versions the checkpoints were trained on
    licence: str


PHOTOGRAPHS: tuple[Photograph, ...] = (
    Photograph("china", "sklearn", "datasets/images/china.jpg", "8378025ad2519d64", "CC BY 2.0 (danielbuechele)"),
    Photograph("flower", "sklearn", "datasets/images/flower.jpg", "a77f6ec41e353afd", "CC BY 2.0 (vultilion)"),
    Photograph("grace_hopper", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg", "a8ca6d734765703b",
               "public domain (U.S. Navy)"),
    Photograph("astronaut", "skimage", "data/astronaut.png", "88431cd9653ccd53", "public domain (NASA)"),
    Photograph("chelsea", "skimage", "data/chelsea.png", "596aa1e7cb875eb7", "CC0 (Stefan van der Walt)"),
    Photograph("coffee", "skimage", "data/coffee.png", "cc02f8ca188b167c", "CC0 (Rachel Michetti)"),
    Photograph("hubble_deep_field", "skimage", "data/hubble_deep_field.jpg", "3a19c5dd8a927a93", "public domain (NASA)"),
    Photograph("rocket", "skimage", "data/rocket.jpg", "c2dd0de7c538df8d", "public domain (SpaceX)"),
    Photograph("retina", "skimage", "data/retina.jpg", "38a07f36f27f095e", "CC0 (Mikael Häggström)"),
    Photograph("immunohistochemistry", "skimage", "data/ihc.png", "f8dd1aa387ddd1f4", "no known copyright restrictions"),
)
_PIP_NAMES = {"sklearn": "scikit-learn", "matplotlib": "matplotlib", "skimage": "scikit-image"}


def photograph_path(photo: Photograph) -> str:
    """The file of `photo` inside its installed package; `ImportError` with the install command if it is missing."""
    spec = importlib.util.find_spec(photo.package)  # locates the package without importing it
    path = os.path.join(os.path.dirname(spec.origin), photo.path) if spec is not None and spec.origin else None
    if path is None or not os.path.isfile(path):
        raise ImportError(
            f"The `photos` dataset reads {photo.path!r} from the {_PIP_NAMES[photo.package]} package, which is not "
            f"installed or does not ship it: pip install \"hf-specdec[photos]\" (scikit-image and matplotlib)."
        )
    return path


def load_photographs() -> dict[str, PILImage.Image]:
    """The ten source photographs as RGB PIL images, by class name. Warns if a file differs from the one the
    shipped checkpoints were trained on (another package version), since the crops then differ too."""
    photos = {}
    for photo in PHOTOGRAPHS:
        path = photograph_path(photo)
        with open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()[:16]
        if digest != photo.sha256:
            warnings.warn(f"{path} is not the file the `photos` checkpoints were made from (sha256 {digest}, "
                          f"expected {photo.sha256}); the crops will differ.", stacklevel=2)
        with PILImage.open(path) as image:
            photos[photo.name] = image.convert("RGB")
    return photos


def crop_boxes(width: int, height: int, count: int, min_scale: float, max_scale: float,
               rng: np.random.Generator) -> np.ndarray:
    """`count` square boxes `(left, upper, right, lower)` (float pixels) inside a `width x height` image."""
    side = rng.uniform(min_scale, max_scale, count) * min(width, height)
    left = rng.uniform(0.0, 1.0, count) * (width - side)
    upper = rng.uniform(0.0, 1.0, count) * (height - side)
    return np.stack([left, upper, left + side, upper + side], axis=1)


def check_crop_scale(min_scale, max_scale) -> None:
    """`ValueError` unless `0 < min_scale <= max_scale <= 1` (a crop's side as a fraction of the photograph's)."""
    for name, value in (("min_scale", min_scale), ("max_scale", max_scale)):
        if not _is_number(value):
            raise ValueError(f"`{name}` must be a number, got {value!r}.")
    if not 0.0 < min_scale <= max_scale <= 1.0:
        raise ValueError(f"`min_scale` and `max_scale` need 0 < min_scale <= max_scale <= 1, got {min_scale} and "
                         f"{max_scale}.")


def load_photos_dataset(
    resolution: int = 32,
    crops_per_photo: int = 400,
    min_scale: float = 0.5,
    max_scale: float = 1.0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
) -> DatasetDict:
    """`crops_per_photo` square crops of each of the ten photographs (`PHOTOGRAPHS`), `resolution x resolution`,
    labelled by photograph, split like the digits (class-stratified, deterministic).

    Args:
        crops_per_photo: crops cut from each photograph (10 classes, so `10 * crops_per_photo` images).
        min_scale, max_scale: a crop's side as a fraction of the photograph's shorter side.
        seed: seeds both the crop boxes and the split.
    """
    from .images import check_loader_numbers, split_dataset  # images.py dispatches to this module

    # at least 10 crops per photograph: each split needs every class
    check_loader_numbers(resolution=resolution, seed=seed, crops_per_photo=(crops_per_photo, 10))
    check_crop_scale(min_scale, max_scale)
    photographs = load_photographs()
    shortest = min(min(photo.size) for photo in photographs.values())
    largest = int(shortest * min_scale)
    if largest < 8:  # no resolution would do: the scale is what is wrong
        raise ValueError(f"`min_scale` {min_scale:g} makes the smallest crop {largest} px (of the shortest photograph "
                         f"side, {shortest} px); crops need at least 8 px: min_scale >= {8 / shortest:.3g}.")
    if resolution > largest:  # beyond it every crop of the smallest photograph would be upsampled (and slow)
        raise ValueError(f"`resolution` must be at most {largest} (the smallest crop, {min_scale:g} of the shortest "
                         f"photograph side, {shortest} px), got {resolution}.")
    images, labels = [], []
    for label, (name, photo) in enumerate(photographs.items()):
        rng = np.random.default_rng([seed, label])
        for box in crop_boxes(*photo.size, crops_per_photo, min_scale, max_scale, rng):
            images.append(photo.resize((resolution, resolution), PILImage.BICUBIC, box=tuple(box)))
            labels.append(label)
    features = Features({"image": Image(), "label": ClassLabel(names=[p.name for p in PHOTOGRAPHS]),
                         "id": Value("int64")})
    dataset = Dataset.from_dict({"image": images, "label": labels, "id": list(range(len(images)))}, features=features)
    return split_dataset(dataset, val_fraction, test_fraction, seed)
