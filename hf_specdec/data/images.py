"""Image datasets on 🤗 `datasets`: the embedded digits, photographs shipped by installed packages (`photos.py`), the
seed's Mini-ImageNet dogs, and any local imagefolder.

Every loader returns a `DatasetDict` with `train` / `validation` / `test` splits and the columns `image` (PIL),
`label` (`ClassLabel`) and `id` (the row's index in the source, so that splits can be checked for overlap).
`hf_specdec.images.images_to_tensor` turns them into the `(B, 3, H, W)` tensors in [-1, 1] that the tokenizers take.
"""

import hashlib
import io
import math
import os
import re
import warnings

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value, concatenate_datasets, load_dataset
from PIL import Image as PILImage

from ..models.configuration_vqgpt import _is_int


DEFAULT_REPO_ID = "timm/mini-imagenet"  # the write-up's dataset on the Hub

# ImageNet's 118 dog classes are the WordNet ids from n02085620 (Chihuahua) to n02113978 (Mexican hairless): classes
# 151-268 of the sorted 1000. Mini-ImageNet keeps a subset of them; the seed trained on those.
DOG_SYNSET_RANGE = ("n02085620", "n02113978")
_SYNSET = re.compile(r"n\d{8}")


def check_split_fractions(val_fraction: float, test_fraction: float) -> None:
    """Raise `ValueError` naming the option unless both fractions are in (0, 1) and leave images to train on."""
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < value < 1.0:
            raise ValueError(f"`{name}` must be in (0, 1), got {value}.")
    if not val_fraction + test_fraction < 1.0:
        raise ValueError("`val_fraction + test_fraction` must be < 1.")


def split_dataset(dataset: Dataset, val_fraction: float, test_fraction: float, seed: int) -> DatasetDict:
    """Deterministic class-stratified train / validation / test split of `dataset` (same seed, same split).

    Raises `ValueError` naming `val_fraction` / `test_fraction` when the images are too few for them, before any cut:
    a stratified split needs at least one image of every class on both sides of each cut, so every class needs 3
    images and each cut must hold out, and keep, at least one image per class.
    """
    check_split_fractions(val_fraction, test_fraction)
    labels, counts = np.unique(np.asarray(dataset.with_format("numpy")["label"]), return_counts=True)
    if counts.min() < 3:
        names = dataset.features["label"].names if hasattr(dataset.features["label"], "names") else None
        small = [f"{names[i] if names else int(i)} ({c} image{'s' if c > 1 else ''})"
                 for i, c in zip(labels, counts) if c < 3]
        raise ValueError(
            "Too few images for `val_fraction` and `test_fraction`: a stratified split needs at least 3 images per "
            f"class (one each for train, validation and test), and {len(small)} class(es) have fewer: "
            f"{_some(small)}. Add images."
        )
    n, classes = len(dataset), len(labels)
    # datasets keeps floor or ceil of `c * kept / n` images of a class of `c`: the test cut keeps 2 of every class
    # (for the validation cut) for sure when it holds out at most n (c - 2) / c, for the smallest class.
    smallest = int(counts.min())
    most = min(n - 2 * classes, n * (smallest - 2) // smallest)
    why = (f"at least one image of every class held out, and 2 of every class kept for the validation cut (at most "
           f"{most} held out: the smallest class has {smallest} images)")
    _check_cut(n, classes, test_fraction, 1.0, "test_fraction", f" of {n} images", most, why,
               ("val_fraction", val_fraction))
    rest = n - math.ceil(test_fraction * n)
    _check_cut(rest, classes, val_fraction / (1.0 - test_fraction), 1.0 - test_fraction, "val_fraction",
               f" of the {rest} images left after the test split", rest - classes,
               "at least one image of every class on each side", ("test_fraction", test_fraction))
    rest_test = dataset.train_test_split(test_size=test_fraction, stratify_by_column="label", seed=seed)
    train_val = rest_test["train"].train_test_split(
        test_size=val_fraction / (1.0 - test_fraction), stratify_by_column="label", seed=seed
    )
    return DatasetDict(train=train_val["train"], validation=train_val["test"], test=rest_test["test"])


def _check_cut(n: int, classes: int, fraction: float, scale: float, option: str, where: str, most: int, why: str,
               other: tuple) -> None:
    """`datasets`' stratified `train_test_split(fraction)` of `n` images holds out `ceil(fraction * n)`, which must be
    between `classes` and `most`. `option = fraction * scale` is what the user set, and `option + other` must stay
    below 1: the advice gives the range of `option` that works, each end as printed."""
    held_out = math.ceil(fraction * n)
    if classes <= held_out <= most:
        return
    other_name, other_value = other
    span = None if most < classes else _working_range(n, classes, most, scale, 1.0 - other_value)
    if span is None:
        advice = "Add images" + (", or lower `test_fraction`" if option == "val_fraction" else
                                 f", or lower `{other_name}`" if most >= classes else "")
    elif span[0] == span[1]:
        advice = f"Add images, or set `{option}` to {span[0]}"
    else:
        advice = f"Add images, or set `{option}` between {span[0]} and {span[1]}"
    raise ValueError(
        f"Too few images for `{option}` {fraction * scale:.3g}: it holds out {held_out}{where}, in {classes} classes, "
        f"but a stratified split needs {why}. {advice}."
    )


def _working_range(n: int, low_count: int, high_count: int, scale: float, below: float) -> tuple:
    """The ends, as short decimals, of the range of an option `v < below` whose cut holds out `ceil(v / scale * n)`
    images, between `low_count` and `high_count`: each end works as printed. None if no such `v`."""
    def works(value: float) -> bool:
        return value < below and low_count <= math.ceil(value / scale * n) <= high_count

    above, at_most = (low_count - 1) / n * scale, high_count / n * scale  # v in (above, at_most]
    for digits in range(2, 10):
        step = 10.0 ** -digits
        low = round((math.floor(above / step) + 1) * step, digits)
        low = low if works(low) else round(low + step, digits)  # rounding errors of the float division
        high = round(min(math.floor(at_most / step), math.ceil(below / step) - 1) * step, digits)
        high = high if works(high) else round(high - step, digits)
        if low <= high and works(low) and works(high):
            return tuple(f"{value:.{digits}f}".rstrip("0").rstrip(".") for value in (low, high))
    return None


def check_loader_numbers(resolution, seed, **counts) -> None:
    """`ValueError` naming the argument unless `resolution` is an integer >= 8, `seed` one in [0, 2**32) and each
    of `counts` (name -> least value) an integer of at least that least value: numbers that PIL and NumPy refused
    with their own words (a float size, a negative seed) or that passed as floats."""
    for name, value, least in [("resolution", resolution, 8), *((n, v, low) for n, (v, low) in counts.items())]:
        if not _is_int(value) or value < least:
            raise ValueError(f"`{name}` must be an integer >= {least}, got {value!r}.")
    if not _is_int(seed) or not 0 <= seed < 2**32:
        raise ValueError(f"`seed` must be an integer in [0, 2**32), got {seed!r}.")


def load_digits_dataset(
    resolution: int = 32, val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0
) -> DatasetDict:
    """scikit-learn's bundled handwritten digits (1,797 real 8x8 scans, 10 classes), upsampled to `resolution`.

    Needs no download. Grey values 0..16 become white-on-black RGB images.
    """
    from sklearn.datasets import load_digits

    check_loader_numbers(resolution=resolution, seed=seed)
    digits = load_digits()
    pixels = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    images = [PILImage.fromarray(p, mode="L").resize((resolution, resolution), PILImage.BICUBIC).convert("RGB") for p in pixels]
    features = Features(
        {"image": Image(), "label": ClassLabel(names=[str(d) for d in range(10)]), "id": Value("int64")}
    )
    dataset = Dataset.from_dict(
        {"image": images, "label": digits.target.tolist(), "id": list(range(len(images)))}, features=features
    )
    return split_dataset(dataset, val_fraction, test_fraction, seed)


def load_imagefolder(
    data_dir: str, val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0
) -> DatasetDict:
    """A local folder in `datasets`' imagefolder layout (`data_dir/<class name>/<image>`), split like the digits.

    The class of an image is the first folder below `data_dir` on its path (as in torchvision's `ImageFolder`):
    `data_dir/cat/indoor/1.png` is a `cat`. A flat folder of images is one class (for tokenizers and unconditional
    teachers, which need none). Existing `train`/`validation`/`test` split folders (`data_dir/train/cat/
    ...`) are merged first, so that every loader splits the same way; the class is then the first folder below the
    split folder.
    """
    if not os.path.isdir(data_dir):
        raise ValueError(f"`data_dir` {data_dir!r} is not a directory.")
    try:
        # datasets labels an image by the folder it sits in, so sub-folders of a class became classes of their own
        # (`cat/indoor/`, `dog/indoor/` -> one class `indoor`); the labels are made here instead.
        loaded = load_dataset("imagefolder", data_dir=data_dir, drop_labels=True)
    except FileNotFoundError as error:  # datasets' EmptyDatasetError: no files at all
        raise ValueError(f"`data_dir` {data_dir!r} holds no image files: expected `data_dir/<class>/<image>` "
                         f"({error}).") from None
    except ValueError as error:  # files, but none an image: `Instruction "train" corresponds to no data!`
        if "corresponds to no data" not in str(error):
            raise
        raise ValueError(f"`data_dir` {data_dir!r} holds no image files (only other files): expected "
                         "`data_dir/<class>/<image>`.") from None
    left_out = _images_left_out(loaded, data_dir)
    broken = [path for path in left_out if not os.path.exists(os.path.join(data_dir, path))]
    if broken:
        raise ValueError(f"`data_dir` {data_dir!r}: {len(broken)} image link(s) point to nothing: "
                         f"{_some(broken)}. Remove them or restore what they point to.")
    metadata = _metadata_files(data_dir) if left_out else []
    if metadata:
        raise ValueError(f"`data_dir` {data_dir!r}: {len(left_out)} image file(s) are not named in "
                         f"{', '.join(metadata)}, and `datasets` leaves them out without a word: "
                         f"{_some(left_out)}. Add a row for each (`file_name`, `label`) or move them out of `data_dir`.")
    if left_out:
        raise ValueError(f"`data_dir` {data_dir!r}: {len(left_out)} image file(s) would be left out without a word: "
                         f"{_some(left_out)}. `datasets` reads folder and file names holding a split word "
                         "(`test`, `val`, `eval`, `dev`, `train_...`, `cat-test`) as splits and keeps only what matches, "
                         "and it does not follow symlinked folders: rename such folders and files (split folders must "
                         "be exactly `train`/`validation`/`test` with class folders inside), and copy linked ones in.")
    for split in loaded.values():
        # datasets fingerprints a folder by file paths and modification times: images replaced with their times kept
        # (`cp -p`, `rsync -a`, an archive extracted again) were served their old codes from the token cache.
        split._fingerprint = hashlib.sha256(f"{split._fingerprint}-{check_image_files(split)}".encode()).hexdigest()[:16]
    columns = {c for split in loaded.values() for c in split.column_names}
    named = sorted(columns & {"class", "classes", "labels", "category", "class_name", "classname", "target"})
    if "label" not in columns and named:  # the folder became one class named after it, without a word
        raise ValueError(f"`data_dir` {data_dir!r}: the metadata file has a column {named[0]!r} but no `label`; the "
                         f"classes are read from a column named `label`: rename {named[0]!r} to `label`.")
    if any("label" not in split.column_names for split in loaded.values()):  # (a metadata file may give labels)
        loaded = _label_by_class_folder(loaded, data_dir)
    return _merge_and_split(loaded, val_fraction, test_fraction, seed)


def _some(items: list[str], shown: int = 5, sep: str = ", ") -> str:
    """The first `shown` of `items` for a message, and how many more."""
    return sep.join(items[:shown]) + (f" and {len(items) - shown} more" if len(items) > shown else "")


def _metadata_files(data_dir: str) -> list[str]:
    """The `metadata.csv` / `.jsonl` / `.parquet` files under `data_dir` (they name the images `datasets` loads)."""
    return sorted(os.path.relpath(os.path.join(folder, name), data_dir) for folder, _, files in os.walk(data_dir)
                  for name in files if name.startswith("metadata.") and name.endswith((".csv", ".jsonl", ".parquet")))


def _images_left_out(loaded: DatasetDict, data_dir: str) -> list[str]:
    """Image files under `data_dir` (links followed, hidden files skipped as `datasets` does) that `loaded` does not
    hold: `datasets` infers splits from names and drops what fits none (a `test` class folder next to `cat` and `dog`
    kept only the `test` images, as one class), and it skips symlinked folders."""
    from datasets.packaged_modules.imagefolder.imagefolder import ImageFolder

    extensions = {e.lower() for e in ImageFolder.EXTENSIONS}
    found, visited = {}, set()
    for folder, subfolders, files in os.walk(data_dir, followlinks=True):
        # Each real folder once: a link back up the tree would otherwise be walked again and again (two such links
        # make the walk exponential in its depth).
        visited.add(os.path.realpath(folder))
        subfolders[:] = [d for d in subfolders if not d.startswith((".", "__"))
                         and os.path.realpath(os.path.join(folder, d)) not in visited]
        for name in files:
            if not name.startswith((".", "__")) and os.path.splitext(name)[1].lower() in extensions:
                path = os.path.join(folder, name)
                found.setdefault(os.path.realpath(path), os.path.relpath(path, data_dir))
    for split in loaded.values():
        for file in split.cast_column("image", Image(decode=False))["image"]:
            if file["path"]:
                found.pop(os.path.realpath(file["path"]), None)
    return sorted(found.values())


# The folder names that `datasets` reads as splits (`datasets.data_files.SPLIT_KEYWORDS`).
_SPLIT_FOLDERS = {"train", "training", "validation", "valid", "dev", "val", "test", "testing", "eval", "evaluation"}


def _label_by_class_folder(loaded: DatasetDict, data_dir: str) -> DatasetDict:
    """`loaded` with a `label` column: each image's first folder below `data_dir`, or below its split folder when
    the images sit in split folders (`data_dir/train/<class>/...`). A flat folder (every image directly in `data_dir`)
    is one class named after it. Raises `ValueError` naming the loose images when only some images sit in class
    folders."""
    root = os.path.abspath(data_dir)
    parts = {name: [os.path.relpath(os.path.abspath(file["path"]), root).split(os.sep)
                    for file in split.cast_column("image", Image(decode=False))["image"]]
             for name, split in loaded.items()}
    every = [p for paths in parts.values() for p in paths]
    depth = 1 if all(len(p) > 1 and p[0].lower() in _SPLIT_FOLDERS for p in every) else 0
    loose = [os.path.join(*p) for p in every if len(p) <= depth + 1]
    if len(loose) == len(every):  # a flat folder of pictures (the usual unconditional data): one class
        name = os.path.basename(root) or "images"
        return DatasetDict({split_name: split.add_column("label", [0] * len(split)).cast_column("label", ClassLabel(names=[name]))
                            for split_name, split in loaded.items()})
    if loose:
        raise ValueError(f"Some images sit in class sub-folders (`data_dir/<class>/<image>`) and some directly in "
                         f"`data_dir`{' or a split folder' if depth else ''}, which have no class: "
                         f"{_some(loose, 3)} (under {data_dir!r}). Move them into a class folder.")
    names = sorted({p[depth] for p in every})
    bases = {p[0] for p in every} if depth else {""}  # (a class with images in another split folder is no gap)
    empty = sorted(os.path.join(base, name) for base in bases for name in os.listdir(os.path.join(root, base))
                   if os.path.isdir(os.path.join(root, base, name)) and not name.startswith((".", "__"))
                   and name not in names)
    if empty:  # it would get no class id, and every class sorted after it another id than its position
        raise ValueError(f"`data_dir` {data_dir!r}: class folder(s) without an image: {_some(empty)}. Put images in "
                         "them or remove them.")
    return DatasetDict({name: split.add_column("label", [names.index(p[depth]) for p in parts[name]])
                        .cast_column("label", ClassLabel(names=names)) for name, split in loaded.items()})


# What the loader does silently to an image that may not be what its owner meant: a warning names such files.
_LONG_SIDE_RATIO = 4  # a centre crop to a square keeps under a quarter of a longer image
_SMALL_SIDE = 8  # pixels: such an image is blown up at least 4x to the smallest usual resolution (32)
_CHANGED_IMAGES = {
    "animated (only the first frame is used)": lambda image: getattr(image, "n_frames", 1) > 1,
    f"more than {_LONG_SIDE_RATIO}x longer than wide (only the centre square is kept)":
        lambda image: max(image.size) > _LONG_SIDE_RATIO * max(min(image.size), 1),
    f"under {_SMALL_SIDE} pixels on a side (upscaled to the resolution)": lambda image: min(image.size) < _SMALL_SIDE,
}


def check_image_files(dataset: Dataset) -> str:
    """Decode every image of `dataset`'s `image` column once; raise `ValueError` naming each file that cannot be
    read (truncated, corrupt, not an image), instead of a PIL error naming no file in the middle of training. Return
    a digest of the files' paths and contents (a fingerprint that sees replaced images whatever their times). Warn
    (one warning naming the files) where the loader will change an image more than its owner may expect: an animated
    image (only its first frame is used), a strip more than 4x longer than wide (`images_to_tensor` keeps the centre
    square) and an image under 8 pixels on a side (upscaled to the resolution)."""
    broken, odd, digest = [], {kind: [] for kind in _CHANGED_IMAGES}, hashlib.sha256()
    for file in dataset.cast_column("image", Image(decode=False))["image"]:
        try:
            data = file["bytes"]
            if data is None:
                with open(file["path"], "rb") as f:
                    data = f.read()
            digest.update(f"{file['path']}\0{len(data)}\0".encode())
            digest.update(data)
            with PILImage.open(io.BytesIO(data)) as image:
                image.load()
                for kind, applies in _CHANGED_IMAGES.items():
                    if applies(image):
                        odd[kind].append(file["path"])
        except (OSError, SyntaxError, ValueError, PILImage.DecompressionBombError) as error:  # PIL's bad-file errors
            broken.append(f"{file['path']} ({error})")
    said = [f"{len(paths)} {kind}: {', '.join(str(p) for p in paths[:3])}{' ...' if len(paths) > 3 else ''}"
            for kind, paths in odd.items() if paths]
    if said:
        warnings.warn(f"Some images under `data_dir` are used other than as they are; {'; '.join(said)}.", stacklevel=3)
    if broken:
        raise ValueError(f"{len(broken)} image file(s) under `data_dir` cannot be read: {_some(broken, sep='; ')}. "
                         "Replace or delete them.")
    return digest.hexdigest()


def _merge_and_split(loaded: DatasetDict, val_fraction: float, test_fraction: float, seed: int) -> DatasetDict:
    parts = [loaded[name] for name in sorted(loaded)]
    dataset = concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    if "label" not in dataset.column_names:
        raise ValueError("The images need class sub-folders (`data_dir/<class>/<image>`, one or more) to get a "
                         "`label` column; images directly in `data_dir` have no class.")
    if not isinstance(dataset.features["label"], ClassLabel):  # labels from a metadata.csv / .jsonl: names or ids
        labels = dataset["label"]
        missing = [i for i, label in enumerate(labels) if label is None or label != label]  # (an empty cell: NaN)
        if missing:  # one gave a TypeError deep in the split, more went on as None labels into training
            files = [str(f["path"]) for f in dataset.select(missing).cast_column("image", Image(decode=False))["image"]]
            raise ValueError(f"The metadata file gives {len(missing)} image(s) no `label` (an empty cell): "
                             f"{_some(files)}. Fill them in.")
        dataset = dataset.class_encode_column("label")  # (a plain column cannot be split by class)
    dataset = dataset.add_column("id", list(range(len(dataset))))
    return split_dataset(dataset, val_fraction, test_fraction, seed)


def is_dog_synset(name: str) -> bool:
    """True if `name` contains an ImageNet WordNet id in the dog range."""
    match = _SYNSET.search(name)
    return bool(match) and DOG_SYNSET_RANGE[0] <= match.group(0) <= DOG_SYNSET_RANGE[1]


def filter_dog_classes(dataset: Dataset) -> Dataset:
    """Keep the rows whose class is a dog synset; relabel them `0..D-1` (the seed's `prepare_dog_dataset.py`)."""
    names = dataset.features["label"].names
    dog_ids = [i for i, name in enumerate(names) if is_dog_synset(name)]
    if not dog_ids:
        raise ValueError("No dog classes found: `label` names must be ImageNet WordNet ids such as 'n02099601'.")
    remap = {old: new for new, old in enumerate(dog_ids)}
    dogs = dataset.filter(lambda labels: [label in remap for label in labels], input_columns="label", batched=True)
    features = dogs.features.copy()
    features["label"] = ClassLabel(names=[names[i] for i in dog_ids])
    return dogs.map(
        lambda labels: {"label": [remap[label] for label in labels]},
        input_columns="label",
        batched=True,
        features=features,
    )


def load_mini_imagenet_dogs(
    repo_id: str = DEFAULT_REPO_ID,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    cache_dir: str | None = None,
) -> DatasetDict:
    """The seed's data: Mini-ImageNet from the Hub, filtered to its dog classes and split like the digits.

    Needs the Hub, or the dataset already in the local cache with `HF_HUB_OFFLINE=1`. Without either it fails in
    about a second with a message; `load_imagefolder` serves the same images from a local folder.
    """
    from huggingface_hub import HfApi, constants

    hint = (
        f"Could not reach the Hugging Face Hub for {repo_id!r}. Either connect and retry, set HF_HUB_OFFLINE=1 if "
        "the dataset is already in your cache, or download the images elsewhere and use "
        "`--dataset imagefolder --data_dir PATH` (hf_specdec.data.load_imagefolder)."
    )
    if not constants.HF_HUB_OFFLINE:
        try:  # fails in ~1 s without a network, where load_dataset retries for ~25 s
            HfApi().dataset_info(repo_id, revision="main", timeout=10)
        except Exception as error:  # network errors come from several libraries
            if "404" in str(error) or "RepositoryNotFound" in type(error).__name__:
                raise ValueError(f"`repo_id` {repo_id!r} is not a dataset on the Hub.") from error
            raise ConnectionError(hint) from error
    try:
        loaded = load_dataset(repo_id, cache_dir=cache_dir)
    except ConnectionError as error:
        raise ConnectionError(hint + " (HF_HUB_OFFLINE is set and the dataset is not cached.)") from error
    dogs = DatasetDict({name: filter_dog_classes(split) for name, split in loaded.items()})
    return _merge_and_split(dogs, val_fraction, test_fraction, seed)


DATASETS = ("digits", "photos", "mini-imagenet-dogs", "imagefolder")


def load_image_dataset(
    name: str,
    resolution: int = 32,
    data_dir: str | None = None,
    repo_id: str = DEFAULT_REPO_ID,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    crops_per_photo: int = 400,
    min_scale: float = 0.5,
    max_scale: float = 1.0,
) -> DatasetDict:
    """The one dispatch by dataset name; each loader takes the options that concern it.

    Args:
        name: `digits` (rendered at `resolution`), `photos` (`crops_per_photo` crops of each of ten photographs
            shipped by installed packages, sides `min_scale`-`max_scale` of the photograph's, at `resolution`; see
            `photos.py`), `mini-imagenet-dogs` (from the Hub
            dataset `repo_id`) or `imagefolder` (the folder `data_dir`).
        val_fraction, test_fraction, seed: the stratified split (see `split_dataset`).
    """
    split = dict(val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    if name == "digits":
        return load_digits_dataset(resolution, **split)
    if name == "photos":
        from .photos import load_photos_dataset

        return load_photos_dataset(resolution, crops_per_photo, min_scale, max_scale, **split)
    if name == "mini-imagenet-dogs":
        return load_mini_imagenet_dogs(repo_id, **split)
    if name == "imagefolder":
        return load_imagefolder(data_dir, **split)
    raise ValueError(f"`dataset` must be one of {sorted(DATASETS)}, got {name!r}.")
