"""Pictures: image grids as PNG."""

import math

import numpy as np
import torch
from PIL import Image


def image_grid(images: torch.Tensor, nrow: int = 8, padding: int = 2) -> Image.Image:
    """`(B, C, H, W)` images in [-1, 1] -> one PIL image with `nrow` images per row."""
    images = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte()
    B, C, H, W = images.shape
    ncol = min(nrow, B)
    nrows = math.ceil(B / ncol)
    grid = np.zeros((nrows * (H + padding) + padding, ncol * (W + padding) + padding, C), dtype=np.uint8)
    for i in range(B):
        r, c = divmod(i, ncol)
        y, x = padding + r * (H + padding), padding + c * (W + padding)
        grid[y : y + H, x : x + W] = images[i].permute(1, 2, 0).numpy()
    return Image.fromarray(grid.squeeze(-1) if C == 1 else grid)


def save_image_grid(images: torch.Tensor, path: str, nrow: int = 8) -> str:
    image_grid(images, nrow).save(path)
    return path
