"""ImageGPT-style colour-palette tokenizer: the seed's cheap alternative to a VQ-VAE.

Each pixel of an image downsampled to the token grid becomes the index of its nearest palette colour (Chen et
al. 2020, ImageGPT, clustered RGB values with k-means). Same interface as `VQTokenizer`: `encode_to_indices`,
`decode_from_indices`, `codebook_size`, `save_pretrained`/`from_pretrained` (safetensors).
"""

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config

from ..images import check_images
from .safetensors_only import SafetensorsOnlyMixin
from .vq_tokenizer import check_indices, codebook_statistics


class PaletteTokenizer(SafetensorsOnlyMixin, ModelMixin, ConfigMixin):
    """Pixels -> nearest of `num_colors` palette colours, on a `grid_size x grid_size` grid.

    Args:
        num_colors (`int`): palette size = codebook size.
        grid_size (`int`): images are area-downsampled to `grid_size x grid_size` before tokenizing.
        image_size (`int`): decoded images are upsampled (nearest) back to this size.
        in_channels (`int`): colour channels.
    """

    @register_to_config
    def __init__(self, num_colors: int = 16, grid_size: int = 8, image_size: int = 32, in_channels: int = 3):
        super().__init__()
        if num_colors < 2:
            raise ValueError(f"`num_colors` must be >= 2, got {num_colors}.")
        if grid_size < 1 or image_size % grid_size:
            raise ValueError(f"`image_size` ({image_size}) must be a multiple of `grid_size` ({grid_size}).")
        self.register_buffer("palette", torch.zeros(num_colors, in_channels))  # colours in [-1, 1]

    @property
    def codebook_size(self) -> int:
        return self.config.num_colors

    def grid_size(self, image_size: int | None = None) -> tuple[int, int]:
        return self.config.grid_size, self.config.grid_size

    def _pixels(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images, self.config.in_channels)
        small = F.adaptive_avg_pool2d(images.float(), self.config.grid_size)  # (B, C, g, g)
        return small.permute(0, 2, 3, 1).reshape(-1, self.config.in_channels)

    @torch.no_grad()
    def fit(self, images: torch.Tensor, seed: int = 0, max_pixels: int = 200_000) -> "PaletteTokenizer":
        """Set the palette to the k-means centroids of the (downsampled) pixels of float `images` `(B, C, H, W)` in
        [-1, 1]."""
        from sklearn.cluster import KMeans

        pixels = self._pixels(images).cpu().numpy()
        rng = np.random.default_rng(seed)
        if len(pixels) > max_pixels:
            pixels = pixels[rng.choice(len(pixels), max_pixels, replace=False)]
        if len(np.unique(pixels, axis=0)) < self.config.num_colors:
            raise ValueError(f"`images` have fewer distinct colours than `num_colors`={self.config.num_colors}.")
        kmeans = KMeans(n_clusters=self.config.num_colors, n_init=4, random_state=seed).fit(pixels)
        self.palette.copy_(torch.from_numpy(kmeans.cluster_centers_).to(self.palette))
        return self

    @torch.no_grad()
    def encode_to_indices(self, images: torch.Tensor) -> torch.LongTensor:
        """Float images `(B, C, H, W)` in [-1, 1] -> palette indices `(B, g, g)`; uint8 pixels and values outside
        [-1, 1] raise `ValueError` (see `hf_specdec.images.check_images`)."""
        pixels = self._pixels(images.to(self.palette.device))
        indices = torch.cdist(pixels, self.palette).argmin(dim=1)
        g = self.config.grid_size
        return indices.reshape(images.shape[0], g, g)

    @torch.no_grad()
    def decode_from_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Palette indices `(B, g, g)` -> images `(B, C, image_size, image_size)`."""
        check_indices(indices, self.codebook_size)
        colours = self.palette[indices.long()].permute(0, 3, 1, 2)  # (B, C, g, g)
        return F.interpolate(colours, size=self.config.image_size, mode="nearest")

    def codebook_usage(self, indices: torch.Tensor) -> dict[str, float]:
        return codebook_statistics(indices, self.codebook_size)


__all__ = ["PaletteTokenizer"]
