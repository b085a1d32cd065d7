"""Pictures: the one conversion between model images (float in [-1, 1]) and pixels (uint8), PIL images, PNG grids.

Every image tensor in the project is `(B, C, H, W)` in [-1, 1], the range the tokenizers take and return.
"""

import math

import numpy as np
import torch
from PIL import Image


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] (any shape) -> uint8 pixels in [0, 255], clamped and rounded."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def from_uint8(pixels: torch.Tensor) -> torch.Tensor:
    """Pixels in [0, 255] (uint8 or float, any shape) -> float images in [-1, 1]."""
    return pixels.float() / 127.5 - 1.0


def images_to_tensor(images, resolution: int) -> torch.Tensor:
    """PIL images -> `(B, 3, resolution, resolution)` float tensor in [-1, 1] (resize + centre crop, RGB)."""
    arrays = []
    for image in images:
        image = image.convert("RGB")
        scale = resolution / min(image.size)
        size = (max(resolution, round(image.width * scale)), max(resolution, round(image.height * scale)))
        image = image.resize(size, Image.BICUBIC)
        left, top = (image.width - resolution) // 2, (image.height - resolution) // 2
        image = image.crop((left, top, left + resolution, top + resolution))
        arrays.append(np.asarray(image, dtype=np.float32))
    return from_uint8(torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2))


def tensor_to_images(images: torch.Tensor) -> list[Image.Image]:
    """`(B, 3, H, W)` in [-1, 1] -> list of PIL RGB images."""
    return [Image.fromarray(a) for a in to_uint8(images).permute(0, 2, 3, 1).cpu().numpy()]


def image_grid(images: torch.Tensor, nrow: int = 8, padding: int = 2) -> Image.Image:
    """`(B, C, H, W)` images in [-1, 1] -> one PIL image with `nrow` images per row."""
    pixels = to_uint8(images.cpu())
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
    image_grid(images, nrow).save(path)
    return path
