"""Pictures: the one conversion between model images (float in [-1, 1]) and pixels (uint8), PIL images, PNG grids.

Every image tensor in the project is `(B, C, H, W)` in [-1, 1], the range the tokenizers take and return.
"""

import math
import os
import unicodedata
import warnings

import numpy as np
import torch
from PIL import Image, ImageOps


# Resampling (e.g. bicubic) overshoots [-1, 1] a little; pixels in [0, 255] or [0, 1] * 255 do not pass.
RANGE_TOLERANCE = 0.05


def check_images(images, channels: int | tuple[int, ...] = 3, argument: str = "images", check_range: bool = True,
                 limit: float = 1 + RANGE_TOLERANCE) -> tuple[float, float] | None:
    """Raise `ValueError` naming `argument` unless `images` is a float tensor `(B, channels, H, W)` in [-1, 1]
    (`channels` may list the counts allowed).

    Refuses integer pixels (uint8 in [0, 255]: convert them with `from_uint8`) and, when `check_range`, NaN and float
    values beyond +-`limit` (default: [-1, 1] and `RANGE_TOLERANCE`), which would otherwise be encoded silently into
    wrong codes. The range check reads the tensor's minimum and maximum (a host synchronisation): leave it off inside
    training steps. Returns that `(minimum, maximum)` (None when not read) for further checks on the same read.
    """
    allowed = (channels,) if isinstance(channels, int) else tuple(channels)
    expected = f"a float tensor of shape (B, {' or '.join(map(str, allowed))}, H, W) with values in [-1, 1]"
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"`{argument}` must be {expected}, got a {type(images).__name__}.")
    if not images.is_floating_point():
        raise ValueError(f"`{argument}` must be {expected}, got dtype {images.dtype}: convert pixels in [0, 255] "
                         "with `hf_specdec.images.from_uint8(pixels)`.")
    if images.dim() != 4 or images.shape[1] not in allowed:
        raise ValueError(f"`{argument}` must be {expected}, got shape {tuple(images.shape)}.")
    if check_range and images.numel():
        low, high = (float(v) for v in images.detach().aminmax())
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ValueError(f"`{argument}` must be {expected}, got values in [{low:.4g}, {high:.4g}]: NaN or infinite values.")
        if not (low >= -limit and high <= limit):
            raise ValueError(f"`{argument}` must be {expected}, got values in [{low:.4g}, {high:.4g}]: convert pixels "
                             "in [0, 255] with `hf_specdec.images.from_uint8(pixels)`, clamp decoded images with "
                             "`.clamp(-1, 1)`.")
        return low, high
    return None


def in_unit_range(value_range: tuple[float, float] | None) -> bool:
    """True when images whose `(minimum, maximum)` `check_images` returned lie in [0, 1]: torchvision's `ToTensor`
    convention, not the [-1, 1] this project takes (such images pass the range check and give wrong codes and metrics
    without a word; real images in [-1, 1] nearly always have a pixel darker than mid-grey)."""
    return value_range is not None and value_range[0] >= 0 and value_range[1] <= 1


UNIT_RANGE_HINT = "images in [0, 1] (torchvision's `ToTensor`) become [-1, 1] with `images * 2 - 1`"


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] (any shape) -> uint8 pixels in [0, 255], clamped and rounded."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def from_uint8(pixels: torch.Tensor) -> torch.Tensor:
    """Pixels in [0, 255] (uint8 or float, any shape) -> float images in [-1, 1]."""
    return pixels.float() / 127.5 - 1.0


def to_rgb(image: Image.Image) -> Image.Image:
    """An 8-bit RGB copy of a PIL image of any mode, upright and opaque. `convert("RGB")` clips instead of scaling for
    images of more than 8 bits: 16-bit PNGs (`I;16*`, or `I` holding 16-bit values) came out white and float images
    (`F`, values in [0, 1]) black. Those are scaled to [0, 255] first; every other mode (palette, grey, CMYK) goes
    through `convert("RGB")`. A camera's EXIF orientation is applied (as `datasets` does when it decodes a file), and
    transparent pixels are laid on white (`convert("RGB")` keeps whatever colour they hide, often black)."""
    if not isinstance(image, Image.Image):
        raise ValueError(f"`image` must be a PIL image, got a {type(image).__name__} (files: `Image.open(path)`; uint8 "
                         "arrays: `Image.fromarray(array)`).")
    if image.getexif().get(0x0112, 1) != 1:  # EXIF Orientation: the pixels are stored rotated or mirrored
        image = ImageOps.exif_transpose(image)
    if image.mode in ("La", "RGBa"):  # premultiplied alpha: PIL converts these only to their straight forms
        image = image.convert({"La": "LA", "RGBa": "RGBA"}[image.mode])
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        if not np.isfinite(values).all():  # NaN became black without a word
            raise ValueError(f"A {image.mode} image holds NaN or infinite values: it cannot be shown as pixels.")
        if image.mode.startswith("I;16") or image.mode == "I":
            white = 65535 if image.mode.startswith("I;16") else _integer_white(image, values)
            if white == 65535 and values.size and 255 < values.max() <= 4095:
                # 12-bit sensors (microscopes, medical scanners) store into 16-bit files
                warnings.warn("A 16-bit image holds no value above 4095: read on the 16-bit scale it shows 16x "
                              "darker than 12-bit data would. If the data is 12-bit, scale it to 16 bits first "
                              "(`Image.fromarray(np.uint16(array * 16))`) or to 8 bits (`np.uint8(array // 16)`).",
                              stacklevel=2)
            values = values / (white / 255.0)  # 16-bit: / 257
        elif values.size and values.max() <= 1.0:
            values = values * 255.0  # float images in [0, 1]
        image = Image.fromarray(np.clip(np.round(values), 0, 255).astype(np.uint8), mode="L")
    return image.convert("RGB")


def _integer_white(image: Image.Image, values: np.ndarray) -> int:
    """The value of white in the 32-bit integer (`I`) image `image`: the largest value of the bits per sample its file
    records (a TIFF's `BitsPerSample` and `SampleFormat`: `2**bits - 1`, or `2**(bits - 1) - 1` signed, whose
    negative values are black), so that every image of one dataset gets the same scale whatever it shows.
    Without that record (an image made in memory) it is read from the values: 255 when they fit 8 bits, 65535 when
    they fit 16; values beyond 16 bits or below zero have no scale to guess and are refused (they came out white or
    black)."""
    tags = getattr(image, "tag_v2", None)
    bits = tags.get(258) if tags is not None else None  # TIFF BitsPerSample
    if isinstance(bits, tuple):
        bits = bits[0] if bits else None
    if isinstance(bits, int) and 8 <= bits <= 32:
        signed = tags.get(339) in (2, (2,))  # SampleFormat: 1 unsigned, 2 signed (Pillow writes `I` signed)
        return 2 ** (bits - 1) - 1 if signed else 2**bits - 1
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if low < 0 or high > 65535:
        raise ValueError(f"An I (32-bit integer) image with values in [{low:g}, {high:g}] and no bit depth on record: "
                         "its scale cannot be told (8-bit images hold 0-255, 16-bit ones 0-65535); convert it to 8 "
                         "bits first, e.g. `Image.fromarray(np.uint8(array * 255 / white))`.")
    return 255 if high <= 255 else 65535


def images_to_tensor(images, resolution: int) -> torch.Tensor:
    """PIL images (a list, or one image) -> `(B, 3, resolution, resolution)` float tensor in [-1, 1] (resize + centre
    crop, RGB, any PIL mode)."""
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise ValueError(f"`resolution` must be a positive integer, got {resolution!r}.")
    if isinstance(images, Image.Image):
        images = [images]
    if isinstance(images, (str, bytes, np.ndarray, torch.Tensor)) or not hasattr(images, "__iter__"):
        raise ValueError(f"`images` must be a list of PIL images, got a {type(images).__name__} (tensors in [-1, 1] "
                         "need no conversion; uint8 arrays: `Image.fromarray(array)` each).")
    arrays = []
    for index, image in enumerate(images):
        if not isinstance(image, Image.Image):
            raise ValueError(f"`images[{index}]` must be a PIL image, got a {type(image).__name__} (uint8 HWC arrays: "
                             "`Image.fromarray(array)`; files: `Image.open(path)`).")
        if image.width < 1 or image.height < 1:
            raise ValueError(f"`images[{index}]` is empty ({image.width}x{image.height}).")
        image = to_rgb(image)
        scale = resolution / min(image.size)
        size = (max(resolution, round(image.width * scale)), max(resolution, round(image.height * scale)))
        image = image.resize(size, Image.BICUBIC)
        left, top = (image.width - resolution) // 2, (image.height - resolution) // 2
        image = image.crop((left, top, left + resolution, top + resolution))
        arrays.append(np.asarray(image, dtype=np.float32))
    if not arrays:
        raise ValueError("`images` is empty.")
    return from_uint8(torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2))


def picture_pixels(images, nrow: int | None = None) -> torch.Tensor:
    """The uint8 pixels `(B, C, H, W)` of images to draw: a float tensor `(B, 1 or 3, H, W)` about [-1, 1] (decoded
    images may overshoot a little: clamped). `ValueError` naming `images` / `nrow` for what would draw garbage or fail
    deep inside: uint8 or [0, 255] pixels (read as [-1, 1] they draw white), NaN, another shape, no image, `nrow` < 1."""
    if nrow is not None and (isinstance(nrow, bool) or not isinstance(nrow, int) or nrow < 1):
        raise ValueError(f"`nrow` must be an integer >= 1 (images per row), got {nrow!r}.")
    check_images(images, channels=(1, 3), limit=2.0)
    if images.shape[0] == 0:
        raise ValueError("`images` is empty.")
    return to_uint8(images.cpu())


def tensor_to_images(images: torch.Tensor) -> list[Image.Image]:
    """`(B, 3, H, W)` (or 1 channel) in [-1, 1] -> list of PIL images (RGB, or L for 1 channel)."""
    pixels = picture_pixels(images).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a.squeeze(-1) if a.shape[-1] == 1 else a) for a in pixels]


def _check_pixels(name: str, value, low: int, where: str = "") -> None:
    """`ValueError` naming `name` unless `value` is an integer number of pixels >= `low` (not a bool)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"`{name}` must be an integer >= {low} (pixels{where}), got {value!r}.")


def image_grid(images: torch.Tensor, nrow: int = 8, padding: int = 2) -> Image.Image:
    """`(B, C, H, W)` images in [-1, 1] -> one PIL image with `nrow` images per row."""
    _check_pixels("padding", padding, 0, " between images")
    pixels = picture_pixels(images, nrow)
    B, C, H, W = pixels.shape
    ncol = min(nrow, B)
    nrows = math.ceil(B / ncol)
    grid = np.zeros((nrows * (H + padding) + padding, ncol * (W + padding) + padding, C), dtype=np.uint8)
    for i in range(B):
        r, c = divmod(i, ncol)
        y, x = padding + r * (H + padding), padding + c * (W + padding)
        grid[y : y + H, x : x + W] = pixels[i].permute(1, 2, 0).numpy()
    return Image.fromarray(grid.squeeze(-1) if C == 1 else grid)


def save_image_grid(images: torch.Tensor, path: str, nrow: int = 8) -> str:
    """Write `image_grid(images, nrow)` to `path` (PNG by its extension); returns `path`."""
    if os.path.isdir(path):  # Pillow said "unknown file extension: "
        raise ValueError(f"`path` {str(path)!r} is a folder: give a file name such as {os.path.join(str(path), 'grid.png')!r}.")
    image_grid(images, nrow).save(path)
    return path


def _label_font(size: int):
    """`(font, full)`: DejaVu Sans (matplotlib's copy, else the system's), which draws accented and most non-Latin
    letters where Pillow's built-in font drew boxes (`ñandú` came out `▯and▯`); Pillow's font when neither is there."""
    from PIL import ImageFont

    paths = ["DejaVuSans.ttf"]
    try:
        import matplotlib

        paths.insert(0, os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf"))
    except ImportError:
        pass
    for path in paths:
        try:
            return ImageFont.truetype(path, size), True
        except OSError:
            continue
    return ImageFont.load_default(size=size), False


def _drawable(text: str, full: bool) -> str:
    """`text` on one line (a newline made Pillow refuse to measure it); without a full font, accents dropped and
    other non-ASCII letters shown as `?` rather than boxes."""
    text = " ".join(text.split())
    if full:
        return text
    return "".join(c if c.isascii() else "?" for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def labelled_grid(images: torch.Tensor, nrow: int, row_labels: list[str] | None = None, title: str | None = None,
                  cell_size: int = 64, padding: int = 4) -> Image.Image:
    """A grid meant for people: `(B, C, H, W)` images in [-1, 1], `nrow` per row, each cell upscaled to at least
    `cell_size` pixels (nearest neighbour for small images, so every generated pixel stays visible as a block),
    `row_labels` written left of the rows and `title` above. Returns a PIL RGB image."""
    from PIL import ImageDraw

    _check_pixels("cell_size", cell_size, 1)
    _check_pixels("padding", padding, 0)
    if title is not None and not isinstance(title, str):
        raise ValueError(f"`title` must be a string or None, got {title!r}.")
    if row_labels is not None and (isinstance(row_labels, str) or not all(isinstance(r, str) for r in row_labels)):
        raise ValueError(f"`row_labels` must be a list of strings (one per row), got {row_labels!r}.")
    pixels = picture_pixels(images, nrow)
    B, C, H, W = pixels.shape
    scale = max(1, math.ceil(cell_size / max(H, W)))
    cell_h, cell_w = H * scale, W * scale
    ncol = min(nrow, B)
    nrows = math.ceil(B / ncol)
    if row_labels is not None and len(row_labels) != nrows:
        raise ValueError(f"`row_labels` must name each of the {nrows} rows ({B} images, {nrow} per row), got "
                         f"{len(row_labels)}.")
    font, full = _label_font(max(10, min(18, cell_h // 4)))
    title = _drawable(title, full) if title else title
    row_labels = [_drawable(label, full) for label in row_labels] if row_labels else row_labels
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_width = lambda text: int(measure.textlength(text, font=font))  # noqa: E731
    left = padding + (max(text_width(label) for label in row_labels) + 2 * padding if row_labels else 0)
    line = font.size + padding
    top = padding + (line + padding if title else 0)
    width = max(left + ncol * (cell_w + padding), (text_width(title) + 2 * padding) if title else 0)
    canvas = Image.new("RGB", (width, top + nrows * (cell_h + padding)), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((padding, padding), title, fill="black", font=font)
    resample = Image.NEAREST if scale > 1 else Image.BICUBIC
    for i in range(B):
        r, c = divmod(i, ncol)
        array = pixels[i].permute(1, 2, 0).numpy()
        tile = Image.fromarray(array.squeeze(-1) if C == 1 else array).convert("RGB")
        canvas.paste(tile.resize((cell_w, cell_h), resample), (left + c * (cell_w + padding), top + r * (cell_h + padding)))
    for r, label in enumerate((row_labels or [])[:nrows]):
        y = top + r * (cell_h + padding) + (cell_h - font.size) // 2
        draw.text((padding, y), label, fill="black", font=font)
    return canvas
