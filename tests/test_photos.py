"""The `photos` dataset: real colour photographs from installed packages, cut into deterministic crops, by name."""

import importlib.util
import warnings

import numpy as np
import pytest
import torch

from hf_specdec.data import DataArguments, PHOTOGRAPHS, images_to_tensor, load_image_dataset, load_photos_dataset
from hf_specdec.data import photos as photos_module


@pytest.fixture(scope="module")
def small():
    return load_photos_dataset(resolution=32, crops_per_photo=20)


def _pixels(split) -> np.ndarray:
    return np.stack([np.asarray(image) for image in split["image"]])


def test_ten_colour_photographs_ship_inside_installed_packages():
    photographs = photos_module.load_photographs()  # no download: files in the wheels, checked by hash (no warning)
    assert list(photographs) == [p.name for p in PHOTOGRAPHS] and len(photographs) == 10
    for name, image in photographs.items():
        assert image.mode == "RGB" and min(image.size) >= 256, name
        pixels = np.asarray(image, dtype=np.float32)
        assert np.abs(pixels[..., 0] - pixels[..., 2]).mean() > 5, f"{name} is not a colour photograph"
    assert all(p.licence for p in PHOTOGRAPHS)


def test_loadable_by_name_with_the_default_size():
    splits = load_image_dataset("photos", resolution=32)
    assert {name: len(split) for name, split in splits.items()} == {"train": 3200, "validation": 400, "test": 400}
    assert splits["train"].features["label"].names == [p.name for p in PHOTOGRAPHS]
    for split in splits.values():
        assert set(split["label"]) == set(range(10))
    args = DataArguments(dataset="photos", crops_per_photo=20, resolution=32)
    assert len(args.load()["train"]) == 160


def test_crops_are_deterministic_disjoint_and_seeded(small):
    again = load_photos_dataset(resolution=32, crops_per_photo=20)
    for name in small:
        assert small[name]["id"] == again[name]["id"]
        assert np.array_equal(_pixels(small[name]), _pixels(again[name]))
    ids = {name: set(split["id"]) for name, split in small.items()}
    assert not (ids["train"] & ids["validation"]) and not (ids["train"] & ids["test"]) and not (ids["validation"] & ids["test"])
    other = load_photos_dataset(resolution=32, crops_per_photo=20, seed=1)
    assert not np.array_equal(_pixels(other["test"]), _pixels(small["test"]))


def test_32_and_64_pixel_datasets_hold_the_same_crops(small):
    large = load_photos_dataset(resolution=64, crops_per_photo=20)
    assert large["train"][0]["image"].size == (64, 64) and small["train"][0]["image"].size == (32, 32)
    assert small["train"]["id"] == large["train"]["id"]
    shrunk = torch.nn.functional.avg_pool2d(images_to_tensor(large["train"]["image"], 64), 2)
    same = (shrunk - images_to_tensor(small["train"]["image"], 32)).abs().mean().item()
    shuffled = (shrunk - images_to_tensor(small["train"]["image"], 32).roll(1, 0)).abs().mean().item()
    assert same < 0.05 < shuffled


def test_the_crop_scale_is_a_data_argument():
    """`--min_scale` / `--max_scale` reach the loader (details instead of whole scenes), and are read only for photos."""
    details = DataArguments(dataset="photos", crops_per_photo=10, min_scale=0.11, max_scale=0.2).load()
    scenes = DataArguments(dataset="photos", crops_per_photo=10).load()
    assert details["train"]["id"] == scenes["train"]["id"]
    # a detail, magnified, changes less from pixel to pixel than a whole scene shrunk to the same 32 pixels
    detail_edges = np.abs(np.diff(_pixels(details["train"]).astype(np.float32), axis=2)).mean()
    scene_edges = np.abs(np.diff(_pixels(scenes["train"]).astype(np.float32), axis=2)).mean()
    assert detail_edges < scene_edges
    with pytest.raises(ValueError, match="`min_scale` is read only with `dataset` photos"):
        DataArguments(dataset="digits", min_scale=0.2)
    with pytest.raises(ValueError, match="`max_scale` is read only with `dataset` photos"):
        DataArguments(dataset="digits", max_scale=0.7)
    with pytest.raises(ValueError, match="`min_scale` and `max_scale` need 0 < min_scale <= max_scale <= 1"):
        DataArguments(dataset="photos", min_scale=0.6, max_scale=0.4)
    with pytest.raises(ValueError, match="need 0 < min_scale"):
        DataArguments(dataset="photos", max_scale=1.5)


def test_crop_boxes_lie_inside_the_photograph():
    boxes = photos_module.crop_boxes(640, 427, 1000, 0.5, 1.0, np.random.default_rng(0))
    sides = boxes[:, 2] - boxes[:, 0]
    assert np.allclose(sides, boxes[:, 3] - boxes[:, 1])
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 640).all() and (boxes[:, 3] <= 427).all()
    assert sides.min() >= 0.5 * 427 and sides.max() <= 427


def test_a_missing_package_says_how_to_install_it(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "skimage" else find_spec(name, *a))
    with pytest.raises(ImportError, match=r"hf-specdec\[photos\]"):
        load_photos_dataset(crops_per_photo=10)


def test_another_file_version_warns(monkeypatch):
    changed = list(PHOTOGRAPHS)
    changed[0] = photos_module.Photograph(*[*vars(changed[0]).values()][:3], "0" * 16, changed[0].licence)
    monkeypatch.setattr(photos_module, "PHOTOGRAPHS", tuple(changed))
    with pytest.warns(UserWarning, match="china.jpg is not the file"):
        photos_module.load_photographs()
    monkeypatch.undo()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        photos_module.load_photographs()


@pytest.mark.parametrize("kwargs, match", [({"resolution": 4}, "resolution"), ({"crops_per_photo": 5}, "crops_per_photo"),
                                           ({"min_scale": 0.8, "max_scale": 0.5}, "min_scale"),
                                           ({"resolution": 4096}, r"`resolution` must be at most 150 \(the smallest crop")])
def test_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_photos_dataset(**kwargs)
