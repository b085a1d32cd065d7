"""Data: digits splits, imagefolder, Mini-ImageNet dog filter and offline failure, token precompute cache."""

import os
import re

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, Features, Value
from PIL import Image

from hf_specdec.data import (
    filter_dog_classes,
    images_to_tensor,
    is_dog_synset,
    load_digits_dataset,
    load_image_dataset,
    load_imagefolder,
    precompute_tokens,
    split_dataset,
    token_sequences,
)
from tests.utils import python_env, run_python, tiny_vq, truncate


@pytest.fixture(scope="module")
def digits():
    return load_digits_dataset(resolution=32)


def test_digits_splits_are_deterministic_disjoint_and_stratified(digits):
    again = load_digits_dataset(resolution=32)
    ids = {name: set(split["id"]) for name, split in digits.items()}
    assert all(set(again[name]["id"]) == ids[name] for name in ids)
    assert not (ids["train"] & ids["validation"]) and not (ids["train"] & ids["test"])
    assert not (ids["validation"] & ids["test"])
    assert len(ids["train"] | ids["validation"] | ids["test"]) == 1797
    for split in digits.values():
        assert set(split["label"]) == set(range(10))
    other_seed = load_digits_dataset(resolution=32, seed=1)
    assert set(other_seed["test"]["id"]) != ids["test"]


def test_digits_are_real_images_at_the_resolution(digits):
    image = digits["train"][0]["image"]
    assert image.size == (32, 32) and image.mode == "RGB"
    batch = images_to_tensor(digits["train"][:8]["image"], 32)
    assert batch.shape == (8, 3, 32, 32)
    assert batch.min() >= -1 and batch.max() <= 1 and batch.std() > 0.3  # white strokes on black


def test_token_cache_is_reused_and_invalidated(digits, tmp_path):
    tokenizer = tiny_vq()
    calls = []
    encode = tokenizer.encode_to_indices
    tokenizer.encode_to_indices = lambda x: calls.append(len(x)) or encode(x)
    small = digits["validation"]
    first = precompute_tokens(small, tokenizer, resolution=32, cache_dir=str(tmp_path))
    assert sum(calls) == len(small)
    expected = encode(images_to_tensor(small[:4]["image"], 32)).flatten(1)
    assert torch.equal(first[:4]["codes"], expected)
    assert torch.equal(first[:4]["label"], torch.tensor(small[:4]["label"]))
    calls.clear()
    second = precompute_tokens(small, tokenizer, resolution=32, cache_dir=str(tmp_path))
    assert calls == []  # served from the Arrow cache
    assert torch.equal(second[:]["codes"], first[:]["codes"])
    with torch.no_grad():
        tokenizer.quantize.embedding.weight.mul_(-1)  # new weights -> new fingerprint -> recompute
    precompute_tokens(small, tokenizer, resolution=32, cache_dir=str(tmp_path))
    assert sum(calls) == len(small)
    assert len(list(tmp_path.glob("tokens-*.arrow"))) == 2


def test_token_sequences_check_codebook():
    labels, codes = torch.tensor([0, 2]), torch.tensor([[1, 2], [3, 15]])
    seq = token_sequences(labels, codes, codebook_size=16, num_classes=3)
    assert seq.tolist() == [[16, 1, 2], [18, 3, 15]]
    assert token_sequences(labels, codes, 16, 0)[:, 0].tolist() == [16, 16]
    with pytest.raises(ValueError, match="codebook"):
        token_sequences(labels, codes, codebook_size=8, num_classes=3)
    with pytest.raises(ValueError, match="labels"):
        token_sequences(torch.tensor([0, 3]), codes, 16, 3)


def test_imagefolder(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        os.makedirs(tmp_path / name)
        for i in range(10):
            Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(tmp_path / name / f"{i}.png")
    data = load_imagefolder(str(tmp_path), val_fraction=0.2, test_fraction=0.2)
    assert sum(len(s) for s in data.values()) == 20
    assert data["train"].features["label"].names == ["cat", "dog"]
    assert images_to_tensor(data["test"][:2]["image"], 32).shape == (2, 3, 32, 32)
    tokens = precompute_tokens(data["test"], tiny_vq(), resolution=32)
    assert tokens[:]["codes"].shape == (len(data["test"]), 64)
    with pytest.raises(ValueError, match="data_dir"):
        load_imagefolder(str(tmp_path / "missing"))
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(ValueError, match="`data_dir` .* holds no image files"):
        load_imagefolder(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="dataset"):
        load_image_dataset("cifar")


def image_folder(root, counts: dict[str, int]):
    rng = np.random.default_rng(0)
    for name, n in counts.items():
        os.makedirs(root / name)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def test_images_of_every_pil_mode_become_the_same_picture():
    """16-bit and float images are scaled, not clipped, on their way to 8-bit RGB (they came out white and black)."""
    from hf_specdec.images import images_to_tensor

    gray = np.random.default_rng(0).integers(0, 256, (24, 24)).astype(np.uint8)
    reference = images_to_tensor([Image.fromarray(gray, mode="L")], 16)
    variants = {
        "I;16": Image.fromarray(gray.astype(np.uint16) * 257),
        "I": Image.fromarray(gray.astype(np.int32) * 257, mode="I"),
        "F": Image.fromarray(gray.astype(np.float32) / 255.0, mode="F"),
        "RGBA": Image.fromarray(gray, mode="L").convert("RGBA"),
        "P": Image.fromarray(gray, mode="L").convert("P"),
    }
    for mode, image in variants.items():
        assert image.mode.startswith(mode[:3]), (mode, image.mode)
        torch.testing.assert_close(images_to_tensor([image], 16), reference, atol=2 / 127.5, rtol=0, msg=mode)
    assert images_to_tensor([Image.fromarray(gray, mode="L")], 16).std() > 0.3  # not a flat white or black picture


def test_transparent_and_camera_rotated_images_are_drawn_as_shown():
    """Transparent pixels are laid on white (they hid black), an EXIF orientation is applied (a phone's JPEG was used
    lying on its side), for every transparent mode."""
    import io

    from hf_specdec.images import images_to_tensor, to_rgb

    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[2:6, 2:6] = [255, 0, 0, 255]  # an opaque red square, the rest transparent black
    image = Image.fromarray(rgba, "RGBA")
    palette = image.convert("P")
    palette.info["transparency"] = palette.getpixel((0, 0))
    for variant in (image, image.convert("LA"), palette):
        assert to_rgb(variant).getpixel((0, 0)) == (255, 255, 255), variant.mode
    assert to_rgb(image).getpixel((3, 3)) == (255, 0, 0)
    assert images_to_tensor([image], 8)[0, :, 0, 0].tolist() == [1.0, 1.0, 1.0]

    pixels = np.zeros((8, 16, 3), np.uint8)
    pixels[:, :8] = 255  # stored 16 wide, white on the left
    stored = Image.fromarray(pixels)
    exif = stored.getexif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise: 8 wide, 16 high, white on top
    buffer = io.BytesIO()
    stored.save(buffer, "PNG", exif=exif)
    shown = to_rgb(Image.open(io.BytesIO(buffer.getvalue())))
    assert shown.size == (8, 16) and shown.getpixel((4, 2)) == (255, 255, 255) and shown.getpixel((4, 13)) == (0, 0, 0)


def test_unreadable_image_files_are_named(tmp_path):
    image_folder(tmp_path, {"cat": 10, "dog": 10})
    truncate(tmp_path / "dog" / "3.png")
    (tmp_path / "cat" / "junk.jpg").write_bytes(b"not an image")
    with pytest.raises(ValueError) as error:
        load_imagefolder(str(tmp_path), val_fraction=0.2, test_fraction=0.2)
    message = str(error.value)
    assert "2 image file(s)" in message and "data_dir" in message
    assert str(tmp_path / "dog" / "3.png") in message and str(tmp_path / "cat" / "junk.jpg") in message


def test_images_the_loader_changes_much_are_named_in_a_warning(tmp_path):
    """An animated image (first frame only), a strip (centre square only) and a 1x1 image (upscaled) were taken
    without a word; ordinary images raise no warning."""
    import warnings

    image_folder(tmp_path, {"cat": 6, "dog": 6})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_imagefolder(str(tmp_path), val_fraction=0.2, test_fraction=0.2)
    frames = [Image.new("RGB", (12, 12), colour) for colour in ("red", "green", "blue")]
    frames[0].save(tmp_path / "cat" / "moving.gif", save_all=True, append_images=frames[1:])
    Image.new("RGB", (300, 2), "white").save(tmp_path / "dog" / "strip.png")
    Image.new("RGB", (1, 1), "black").save(tmp_path / "dog" / "dot.png")
    with pytest.warns(UserWarning) as caught:
        data = load_imagefolder(str(tmp_path), val_fraction=0.2, test_fraction=0.2)
    message = " ".join(str(w.message) for w in caught)
    assert sum(len(split) for split in data.values()) == 15  # still used
    assert "1 animated (only the first frame is used): " + str(tmp_path / "cat" / "moving.gif") in message
    assert "1 more than 4x longer than wide" in message and "strip.png" in message
    assert "under 8 pixels on a side" in message and "dot.png" in message


@pytest.mark.parametrize("counts, val, test, option, words", [
    ({"cat": 6, "dog": 6}, 0.1, 0.05, "test_fraction", ["holds out 1 of 12", "between 0.09 and 0.66"]),
    ({"cat": 12, "dog": 12}, 0.01, 0.2, "val_fraction", ["1 of the 19 images left after the test split",
                                                         "between 0.05 and 0.71"]),
    ({"cat": 1, "dog": 9}, 0.2, 0.2, "test_fraction", ["cat (1 image)", "at least 3 images per class"]),
    # a class of 2 images was accepted by the first cut and failed in the second; now refused up front
    ({"cat": 2, "dog": 2, "eel": 2}, 0.3, 0.3, "val_fraction", ["3 class(es) have fewer: cat (2 images)",
                                                                  "Add images"]),
    ({"cat": 2, "dog": 30}, 0.2, 0.2, "test_fraction", ["cat (2 images)"]),
    # the test cut must keep 2 images per class for the validation cut (was advised up to 0.667 for 3 + 3)
    ({"cat": 3, "dog": 3}, 0.1, 0.1, "test_fraction", ["at most 2 held out", "between 0.17 and 0.33"]),
    # the advice respects val_fraction + test_fraction < 1
    ({"cat": 30, "dog": 30}, 0.5, 0.01, "test_fraction", ["between 0.02 and 0.49"]),
])
def test_too_few_images_for_the_split_fractions(tmp_path, counts, val, test, option, words):
    image_folder(tmp_path, counts)
    with pytest.raises(ValueError) as error:
        load_imagefolder(str(tmp_path), val_fraction=val, test_fraction=test)
    assert f"`{option}`" in str(error.value)
    for word in words:
        assert word in str(error.value), str(error.value)


@pytest.mark.parametrize("counts", [(3, 3), (3, 4, 5), (6, 6), (20, 20, 20), (10, 3)])
def test_the_advised_split_fractions_work(counts):
    """Follow the advice of every refusal until the split works: each printed end of a range must work as printed."""
    labels = [label for label, count in enumerate(counts) for _ in range(count)]
    features = Features({"label": ClassLabel(names=[f"c{i}" for i in range(len(counts))]), "id": Value("int64")})
    dataset = Dataset.from_dict({"label": labels, "id": list(range(len(labels)))}, features=features)
    for val, test in [(0.01, 0.01), (0.1, 0.1), (0.05, 0.4), (0.4, 0.05), (0.45, 0.45)]:
        for end in (0, 1):
            fractions = {"val_fraction": val, "test_fraction": test}
            for _ in range(3):
                try:
                    data = split_dataset(dataset, fractions["val_fraction"], fractions["test_fraction"], seed=0)
                    break
                except ValueError as error:
                    advice = re.search(r"set `(\w+)` (?:between ([\d.]*\d) and ([\d.]*\d)|to ([\d.]*\d))", str(error))
                    assert advice, str(error)
                    ends = [advice.group(2), advice.group(3)] if advice.group(2) else [advice.group(4)] * 2
                    fractions[advice.group(1)] = float(ends[end])
            else:
                raise AssertionError(f"advice did not converge for {counts}, {val}, {test}")
            assert sum(len(split) for split in data.values()) == len(labels)
            assert all(len(split) >= 1 for split in data.values())


def test_smallest_image_folder_that_splits(tmp_path):
    data = load_imagefolder(str(image_folder(tmp_path, {"cat": 6, "dog": 6})), val_fraction=0.1, test_fraction=0.1)
    assert {name: len(split) for name, split in data.items()} == {"train": 8, "validation": 2, "test": 2}


def test_dog_filter_keeps_dog_synsets_only():
    names = ["n01532829", "n02099601", "n02110341", "n03017168", "n02113978"]  # bird, 2 dogs, chime, dog
    features = Features({"image": Value("string"), "label": ClassLabel(names=names)})
    rows = Dataset.from_dict({"image": [str(i) for i in range(10)], "label": [i % 5 for i in range(10)]}, features=features)
    dogs = filter_dog_classes(rows)
    assert dogs.features["label"].names == ["n02099601", "n02110341", "n02113978"]
    assert sorted(dogs["label"]) == [0, 0, 1, 1, 2, 2]
    assert [is_dog_synset(n) for n in names] == [False, True, True, False, True]
    with pytest.raises(ValueError, match="dog"):
        birds = Features({"image": Value("string"), "label": ClassLabel(names=["n01532829", "n03017168"])})
        filter_dog_classes(Dataset.from_dict({"image": ["a", "b"], "label": [0, 1]}, features=birds))


def test_mini_imagenet_offline_fails_fast_with_guidance(tmp_path):
    code = "from hf_specdec.data import load_mini_imagenet_dogs\nload_mini_imagenet_dogs(cache_dir=%r)" % str(tmp_path)
    result = run_python(["-c", code], env=python_env(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "home")), timeout=120)
    assert result.returncode != 0
    assert "ConnectionError" in result.stderr
    assert "HF_HUB_OFFLINE" in result.stderr and "imagefolder" in result.stderr


def test_one_class_folder_and_a_flat_folder_are_one_class(tmp_path):
    """`datasets` infers labels only from two or more class folders: one class folder came back without a `label`
    column and was refused as if it had no class folder."""
    data = load_imagefolder(str(image_folder(tmp_path / "one", {"cat": 10})), val_fraction=0.2, test_fraction=0.2)
    assert data["train"].features["label"].names == ["cat"]
    assert {label for split in data.values() for label in split["label"]} == {0}
    assert sum(len(s) for s in data.values()) == 10
    split = load_imagefolder(str(image_folder(tmp_path / "split" / "train", {"cat": 10}).parent), val_fraction=0.2,
                             test_fraction=0.2)  # the same inside a train/ split folder
    assert split["train"].features["label"].names == ["cat"]
    flat = tmp_path / "flat"  # a flat folder of pictures (unconditional data, a tokenizer's): one class, its name
    flat.mkdir()
    for i in range(10):
        Image.new("RGB", (12, 12), (i, 0, 0)).save(flat / f"{i}.png")
    data = load_imagefolder(str(flat), val_fraction=0.2, test_fraction=0.2)
    assert data["train"].features["label"].names == ["flat"] and sum(len(s) for s in data.values()) == 10
    image_folder(flat, {"cat": 3})  # some images in a class folder, some not: ambiguous
    with pytest.raises(ValueError, match="some directly in `data_dir`, which have no class: .*Move them"):
        load_imagefolder(str(flat))


def test_the_class_is_the_first_folder_below_data_dir(tmp_path):
    """`datasets` labelled an image by the folder it sits in: `red/x/`, `green/x/` became one class `x`."""
    for name, colour in (("red", (255, 0, 0)), ("green", (0, 255, 0))):
        for sub in ("x", "y"):
            os.makedirs(tmp_path / "nest" / name / sub)
            for i in range(3):
                Image.new("RGB", (12, 12), colour).save(tmp_path / "nest" / name / sub / f"{i}.png")
    data = load_imagefolder(str(tmp_path / "nest"), val_fraction=0.2, test_fraction=0.2)
    names = data["train"].features["label"].names
    assert names == ["green", "red"]
    for split in data.values():
        for row in split:
            assert row["image"].convert("RGB").getpixel((0, 0)) == {"red": (255, 0, 0), "green": (0, 255, 0)}[names[row["label"]]]
    os.makedirs(tmp_path / "split" / "train")
    os.rename(tmp_path / "nest" / "red", tmp_path / "split" / "train" / "red")
    os.rename(tmp_path / "nest" / "green", tmp_path / "split" / "train" / "green")
    split = load_imagefolder(str(tmp_path / "split"), val_fraction=0.2, test_fraction=0.2)
    assert split["train"].features["label"].names == ["green", "red"]
    (tmp_path / "notes" / "a").mkdir(parents=True)
    (tmp_path / "notes" / "a" / "README.txt").write_text("no images here")
    with pytest.raises(ValueError, match="`data_dir` .* holds no image files \\(only other files\\)"):
        load_imagefolder(str(tmp_path / "notes"))


def test_a_token_cache_dir_that_cannot_be_a_folder_is_refused_with_the_arguments(tmp_path):
    from hf_specdec.data import DataArguments

    (tmp_path / "afile").write_text("x")  # was a FileExistsError after the data and the tokenizer had loaded
    with pytest.raises(ValueError, match="`token_cache_dir` .*afile' is a file, not a folder"):
        DataArguments(token_cache_dir=str(tmp_path / "afile"))
    with pytest.raises(ValueError, match="`token_cache_dir` .* cannot be made: .*afile' is a file"):
        DataArguments(token_cache_dir=str(tmp_path / "afile" / "tokens"))


def test_labels_from_a_metadata_file_are_classes(tmp_path):
    """datasets' documented way to label an imagefolder (a metadata.csv `label` column) gave a plain column, which
    the stratified split refused with datasets' own error."""
    rows = ["file_name,label"]
    for i in range(12):
        Image.new("RGB", (12, 12), (255, 0, 0) if i % 2 else (0, 0, 255)).save(tmp_path / f"img{i}.png")
        rows.append(f"img{i}.png,{'red' if i % 2 else 'blue'}")
    (tmp_path / "metadata.csv").write_text("\n".join(rows) + "\n")
    data = load_imagefolder(str(tmp_path), val_fraction=0.25, test_fraction=0.25)
    names = data["train"].features["label"].names
    assert names == ["blue", "red"] and sum(len(s) for s in data.values()) == 12
    for row in data["test"]:
        assert row["image"].getpixel((0, 0)) == {"red": (255, 0, 0), "blue": (0, 0, 255)}[names[row["label"]]]


def test_premultiplied_alpha_and_nan_images():
    from hf_specdec.images import to_rgb

    assert to_rgb(Image.new("La", (4, 4))).getpixel((0, 0)) == (255, 255, 255)  # PIL: "conversion from La to L"
    assert to_rgb(Image.new("RGBa", (4, 4), (10, 20, 30, 255))).getpixel((0, 0)) == (10, 20, 30)
    with pytest.raises(ValueError, match="F image holds NaN"):  # became black without a word
        to_rgb(Image.fromarray(np.full((4, 4), np.nan, np.float32), mode="F"))


def test_32_bit_integer_images_take_the_bit_depth_their_file_records():
    """An `I` image was scaled by its own maximum (a dark 16-bit picture came out 257 times as bright as a light one of
    the same file type) and values beyond 16 bits came out white: the file's bit depth decides, else the values'
    range, and what has no scale to guess is refused by name."""
    import io

    from hf_specdec.images import to_rgb

    def tiff(array):
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="TIFF")
        return Image.open(io.BytesIO(buffer.getvalue()))

    white = 2**31 - 1  # the file records 32 bits, signed
    for value, pixel in ((200, 0), (65535, 0), (white // 255 * 200, 200), (white, 255), (-7, 0)):
        image = tiff(np.full((4, 4), value, np.int32))
        assert image.mode == "I" and to_rgb(image).getpixel((0, 0)) == (pixel,) * 3, value
    assert to_rgb(Image.fromarray(np.full((4, 4), 200, np.int32), mode="I")).getpixel((0, 0)) == (200, 200, 200)
    for values in (70000, -5):
        with pytest.raises(ValueError, match=r"I \(32-bit integer\) image .* no bit depth on record"):
            to_rgb(Image.fromarray(np.full((4, 4), values, np.int32), mode="I"))
