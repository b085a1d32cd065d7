"""The VQ image tokenizer: diffusers' `VQModel`, configured and extended, not forked.

`VQTokenizer` is a `VQModel` subclass that adds what a token-based image generator needs: images <-> integer
code grids, codebook usage statistics, and an optional EMA codebook with dead-code restart (van den Oord et al.
2017, appendix A.1; restart as in Dhariwal et al. 2020, Jukebox), which `VQModel`'s quantizer does not have.
Weights save and load as safetensors through diffusers' `ModelMixin`.
"""

import inspect
import warnings

import torch
import torch.distributed as dist
import torch.nn.functional as F
from diffusers import VQModel
from diffusers.configuration_utils import register_to_config
from diffusers.models.autoencoders.vae import VectorQuantizer

from ..images import UNIT_RANGE_HINT, check_images, in_unit_range
from .modeling_vqgpt import check_weights_loaded
from .safetensors_only import SafetensorsOnlyMixin


def codebook_statistics(indices: torch.Tensor, codebook_size: int) -> dict[str, float]:
    """Fraction of the codebook used by `indices` (any shape) and the perplexity `exp(H)` of their histogram.

    `ValueError` unless `indices` are codes in `[0, codebook_size)`: a code past the codebook widened the histogram
    (usage of a 16-code book measured over 100 bins), a class or null token from a generated sequence's prompt
    counted as a code (perplexity 17 on 16 codes)."""
    if not _is_positive_int(codebook_size):
        raise ValueError(f"`codebook_size` must be a positive integer, got {codebook_size!r}.")
    check_indices(indices, codebook_size, grid=False)
    return _histogram_statistics(indices, codebook_size)


def _histogram_statistics(indices: torch.Tensor, codebook_size: int) -> dict[str, float]:
    """`codebook_statistics` of codes known to be valid (the quantizer's own, in its forward: no checking reads)."""
    counts = torch.bincount(indices.reshape(-1), minlength=codebook_size).float()
    probs = counts / counts.sum().clamp(min=1)
    entropy = -(probs * probs.clamp(min=1e-12).log()).sum()
    return {"usage": (counts > 0).float().mean().item(), "perplexity": entropy.exp().item()}


def _is_positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def check_tokenizer_sizes(*, codebook_size, block_out_channels, norm_num_groups, ema_decay, dead_code_threshold,
                          commitment_beta, names: dict[str, str] | None = None, **sizes) -> None:
    """Raise `ValueError` naming the argument unless `sizes` (and `norm_num_groups`) are positive integers, the codebook
    has >= 2 codes, every level's `block_out_channels` is a multiple of `norm_num_groups`, and the EMA quantizer's
    settings are in range (`ema_decay` in [0, 1), `dead_code_threshold` and `commitment_beta` finite and >= 0).
    `names` renames fields for the message (the model's config says `num_vq_embeddings` for `codebook_size`)."""
    name = lambda field: (names or {}).get(field, field)  # noqa: E731
    for field, value in {**sizes, "norm_num_groups": norm_num_groups}.items():
        if not _is_positive_int(value):
            raise ValueError(f"`{name(field)}` must be a positive integer, got {value!r}.")
    if not _is_positive_int(codebook_size) or codebook_size < 2:
        raise ValueError(f"`{name('codebook_size')}` must be an integer >= 2, got {codebook_size!r}.")
    if not block_out_channels or not all(_is_positive_int(c) for c in block_out_channels):
        raise ValueError(f"`{name('block_out_channels')}` must be one or more positive integers, got "
                         f"{block_out_channels!r}.")
    if any(c % norm_num_groups for c in block_out_channels):
        raise ValueError(f"`{name('block_out_channels')}` {tuple(block_out_channels)} must be multiples of "
                         f"`{name('norm_num_groups')}` ({norm_num_groups}).")
    if not 0.0 <= ema_decay < 1.0:
        raise ValueError(f"`{name('ema_decay')}` must be in [0, 1), got {ema_decay!r}.")
    for field, value in (("dead_code_threshold", dead_code_threshold), ("commitment_beta", commitment_beta)):
        if not 0.0 <= value < float("inf"):
            raise ValueError(f"`{name(field)}` must be a finite number >= 0, got {value!r}.")


def check_indices(indices: torch.Tensor, codebook_size: int, grid: bool = True) -> None:
    """Raise `ValueError` unless `indices` is a `(B, h, w)` integer grid (any shape with `grid=False`, at least one
    code) of codes in `[0, codebook_size)`."""
    shape = " (B, h, w)" if grid else ""
    if not isinstance(indices, torch.Tensor) or indices.is_floating_point() or indices.is_complex() or (
        indices.dtype == torch.bool
    ):
        kind = indices.dtype if isinstance(indices, torch.Tensor) else type(indices).__name__
        raise ValueError(f"`indices` must be an integer tensor of codes{shape}, got {kind}.")
    if grid and indices.dim() != 3:
        raise ValueError(f"`indices` must have shape (B, h, w), got {tuple(indices.shape)}.")
    if not grid and indices.numel() == 0:
        raise ValueError("`indices` holds no code: the statistics need at least one.")
    if indices.numel():
        low, high = indices.min().item(), indices.max().item()
        if low < 0 or high >= codebook_size:
            raise ValueError(f"`indices` must be codes in [0, {codebook_size}), got values in [{low}, {high}] (a "
                             "generated sequence starts with its class or null token: pass `sequences[:, 1:]`).")


class EMAVectorQuantizer(VectorQuantizer):
    """Vector quantizer whose codebook is an exponential moving average of the encoder outputs assigned to it.

    The codebook gets no gradient; the loss is only the commitment term `beta * ||z - sg(e)||^2`. Codes whose
    EMA cluster size falls below `dead_code_threshold` are restarted at random encoder outputs of the batch.
    Under `torch.distributed` the counts and sums are all-reduced and restarts are broadcast from rank 0, so every
    rank keeps the same codebook.
    """

    def __init__(
        self,
        n_e: int,
        vq_embed_dim: int,
        beta: float = 0.25,
        decay: float = 0.99,
        eps: float = 1e-5,
        dead_code_threshold: float = 1.0,
    ):
        super().__init__(n_e, vq_embed_dim, beta=beta, remap=None, sane_index_shape=False, legacy=False)
        self.decay = decay
        self.eps = eps
        self.dead_code_threshold = dead_code_threshold
        self.embedding.weight.requires_grad_(False)
        self.register_buffer("ema_cluster_size", torch.ones(n_e))
        self.register_buffer("ema_embed_sum", self.embedding.weight.detach().clone())

    def forward(self, z: torch.Tensor):
        z = z.permute(0, 2, 3, 1).contiguous()  # (B, h, w, D)
        z_flat = z.view(-1, self.vq_embed_dim)
        indices = torch.argmin(torch.cdist(z_flat, self.embedding.weight), dim=1)
        if self.training:
            self._ema_update(z_flat.detach(), indices)
        z_q = self.embedding(indices).view(z.shape)
        loss = self.beta * F.mse_loss(z, z_q.detach())
        z_q = z + (z_q - z).detach()  # straight-through
        perplexity = torch.tensor(_histogram_statistics(indices, self.n_e)["perplexity"], device=z.device)
        return z_q.permute(0, 3, 1, 2).contiguous(), loss, (perplexity, None, indices)

    @torch.no_grad()
    def _ema_update(self, z_flat: torch.Tensor, indices: torch.Tensor) -> None:
        one_hot = F.one_hot(indices, self.n_e).type(z_flat.dtype)  # (N, K)
        counts = one_hot.sum(0)
        sums = one_hot.t() @ z_flat  # (K, D)
        distributed = dist.is_available() and dist.is_initialized()
        if distributed:
            dist.all_reduce(counts)
            dist.all_reduce(sums)
        self.ema_cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.ema_embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        # Laplace smoothing keeps rarely used codes from dividing by ~0.
        n = self.ema_cluster_size.sum()
        smoothed = (self.ema_cluster_size + self.eps) / (n + self.n_e * self.eps) * n
        self.embedding.weight.copy_(self.ema_embed_sum / smoothed.unsqueeze(1))

        dead = self.ema_cluster_size < self.dead_code_threshold
        if dead.any():
            picks = torch.randint(0, z_flat.shape[0], (int(dead.sum()),), device=z_flat.device)
            restart = self.embedding.weight.clone()
            restart[dead] = z_flat[picks]
            if distributed:
                dist.broadcast(restart, src=0)
            self.embedding.weight.copy_(restart)
            self.ema_embed_sum[dead] = restart[dead] * self.dead_code_threshold
            self.ema_cluster_size[dead] = self.dead_code_threshold


class VQTokenizer(SafetensorsOnlyMixin, VQModel):
    """`VQModel` that turns images `(B, 3, H, W)` in [-1, 1] into code grids `(B, h, w)` and back.

    All `VQModel` arguments keep their meaning; `down_block_types` sets the downsampling factor
    `2 ** (len(down_block_types) - 1)`. Extra arguments:
        use_ema (`bool`): EMA codebook with dead-code restart instead of the gradient-trained one.
        ema_decay (`float`): EMA decay of cluster sizes and sums.
        dead_code_threshold (`float`): EMA cluster size under which a code is restarted.
        commitment_beta (`float`): commitment weight of the EMA quantizer.
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        down_block_types: tuple[str, ...] = ("DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types: tuple[str, ...] = ("UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels: tuple[int, ...] = (32, 64, 64),
        layers_per_block: int = 1,
        act_fn: str = "silu",
        latent_channels: int = 32,
        sample_size: int = 32,
        num_vq_embeddings: int = 256,
        norm_num_groups: int = 32,
        vq_embed_dim: int | None = None,
        scaling_factor: float = 1.0,
        norm_type: str = "group",
        mid_block_add_attention: bool = False,
        use_ema: bool = False,
        ema_decay: float = 0.99,
        dead_code_threshold: float = 1.0,
        commitment_beta: float = 0.25,
        lookup_from_codebook: bool = True,
        force_upcast: bool = False,
    ):
        if not lookup_from_codebook:
            raise ValueError("`lookup_from_codebook` must be True: `decode_from_indices` looks codes up.")
        if len(down_block_types) != len(up_block_types) or len(down_block_types) != len(block_out_channels):
            raise ValueError("`down_block_types`, `up_block_types` and `block_out_channels` must have equal lengths.")
        check_tokenizer_sizes(
            codebook_size=num_vq_embeddings, block_out_channels=block_out_channels, norm_num_groups=norm_num_groups,
            ema_decay=ema_decay, dead_code_threshold=dead_code_threshold, commitment_beta=commitment_beta,
            names={"codebook_size": "num_vq_embeddings"}, in_channels=in_channels, out_channels=out_channels,
            layers_per_block=layers_per_block, latent_channels=latent_channels, sample_size=sample_size,
            vq_embed_dim=vq_embed_dim if vq_embed_dim is not None else latent_channels)
        super().__init__(
            in_channels=in_channels,
            out_channels=out_channels,
            down_block_types=down_block_types,
            up_block_types=up_block_types,
            block_out_channels=block_out_channels,
            layers_per_block=layers_per_block,
            act_fn=act_fn,
            latent_channels=latent_channels,
            sample_size=sample_size,
            num_vq_embeddings=num_vq_embeddings,
            norm_num_groups=norm_num_groups,
            vq_embed_dim=vq_embed_dim,
            scaling_factor=scaling_factor,
            norm_type=norm_type,
            mid_block_add_attention=mid_block_add_attention,
            lookup_from_codebook=True,
            force_upcast=force_upcast,
        )
        if use_ema:
            self.quantize = EMAVectorQuantizer(
                num_vq_embeddings,
                vq_embed_dim or latent_channels,
                beta=commitment_beta,
                decay=ema_decay,
                dead_code_threshold=dead_code_threshold,
            )

    @classmethod
    def _saved_defaults(cls, config: dict, kwargs: dict) -> None:
        """A folder saved by diffusers' own `VQModel`: a field its config.json leaves out (an older diffusers wrote no
        `mid_block_add_attention`) means `VQModel`'s default, not this class's (mid-block attention on there, off
        here: its attention weights were dropped and the codes came out wrong). `lookup_from_codebook` (a decoding
        switch, no weights; `VQModel`'s default is False) is taken as True, which `decode_from_indices` needs."""
        if config.get("_class_name") != "VQModel":
            return
        for name, parameter in inspect.signature(VQModel.__init__).parameters.items():
            if (parameter.default is not inspect.Parameter.empty and name not in config and name not in kwargs
                    and name != "lookup_from_codebook"):
                kwargs[name] = parameter.default
        kwargs.setdefault("lookup_from_codebook", True)

    @property
    def codebook_size(self) -> int:
        return self.config.num_vq_embeddings

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.config.down_block_types) - 1)

    def grid_size(self, image_size: int | None = None) -> tuple[int, int]:
        """Token grid `(h, w)` for square images of `image_size` (default: the configured `sample_size`)."""
        side = (image_size or self.config.sample_size) // self.downsample_factor
        return side, side

    def _check_loaded(self, tensor, argument: str) -> None:
        """Meta tensors have shapes but no values: the value checks failed on them with a torch RuntimeError."""
        check_weights_loaded(self, "tokenizer")
        if isinstance(tensor, torch.Tensor) and tensor.is_meta:
            raise ValueError(f"`{argument}` is on the meta device: it holds no values.")

    def _check_images(self, images: torch.Tensor, check_range: bool = False) -> tuple[float, float] | None:
        self._check_loaded(images, "images")
        value_range = check_images(images, self.config.in_channels, check_range=check_range)
        if images.shape[-1] % self.downsample_factor or images.shape[-2] % self.downsample_factor:
            raise ValueError(f"`images` height and width must be multiples of {self.downsample_factor}, got "
                             f"{tuple(images.shape[-2:])}.")
        if images.shape[-1] * images.shape[-2] < 2 * self.downsample_factor**2:  # group norm needs 2 values per group
            f = self.downsample_factor
            raise ValueError(f"`images` of {tuple(images.shape[-2:])} pixels give a 1x1 token grid; the tokenizer needs "
                             f"at least two tokens (e.g. {2 * f}x{2 * f} images).")
        return value_range

    def quantize_images(self, images: torch.Tensor):
        """Encode and quantize float images `(B, C, H, W)` in [-1, 1]: returns `(z_q (B, D, h, w), vq_loss,
        indices (B, h, w))`. Integer pixels are refused; the value range is checked by `encode_to_indices` only
        (reading it would synchronise every training step)."""
        self._check_images(images)
        latents = self.encode(images.to(self.dtype)).latents  # float64 pixels are fine; the weights decide
        z_q, vq_loss, (_, _, indices) = self.quantize(latents)
        return z_q, vq_loss, indices.reshape(latents.shape[0], latents.shape[2], latents.shape[3])

    def reconstruct(self, images: torch.Tensor):
        """Training forward: `(reconstruction, vq_loss, indices (B, h, w))`, gradients straight through the codes.

        The same path as `VQModel.forward`, but it also returns the indices for codebook statistics.
        """
        z_q, vq_loss, indices = self.quantize_images(images)
        decoded = self.decoder(self.post_quant_conv(z_q), z_q if self.config.norm_type == "spatial" else None)
        return decoded, vq_loss, indices

    def forward(self, sample: torch.Tensor, return_dict: bool = True, return_indices: bool = False):
        """`VQModel.forward`; `return_indices=True`: `reconstruct(sample)`. Training calls it through the wrapped
        model (DDP syncs gradients only for a forward through its wrapper, not for `unwrap_model(model).reconstruct`)."""
        if return_indices:
            return self.reconstruct(sample)
        return super().forward(sample, return_dict=return_dict)

    @torch.no_grad()
    def encode_to_indices(self, images: torch.Tensor) -> torch.LongTensor:
        """Float images `(B, C, H, W)` in [-1, 1] -> codes `(B, h, w)` int64 in `[0, codebook_size)`.

        Raises `ValueError` for uint8 pixels (convert them with `hf_specdec.images.from_uint8`) and for float values
        outside [-1, 1] (e.g. pixels in [0, 255]), which would otherwise encode to wrong codes without a word.
        Encoding reads the codebook, never updates it: also in training mode, where the EMA codebook's quantizer
        learns from what it quantizes (encoding moved the codebook, and 1 % of later codes, without a word).
        """
        value_range = self._check_images(images, check_range=True)
        if len(images) > 1 and in_unit_range(value_range):
            warnings.warn(f"`images` hold values in [0, 1] only; the tokenizer takes [-1, 1]: {UNIT_RANGE_HINT}.",
                          stacklevel=2)
        training = self.quantize.training
        self.quantize.train(False)
        try:
            return self.quantize_images(images)[2]
        finally:
            self.quantize.train(training)

    @torch.no_grad()
    def decode_from_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Codes `(B, h, w)` -> images `(B, C, H, W)` (about [-1, 1]; clamp before saving)."""
        self._check_loaded(indices, "indices")
        check_indices(indices, self.codebook_size)
        B, h, w = indices.shape
        shape = (B, h, w, self.quantize.vq_embed_dim)
        return self.decode(indices.reshape(-1).long(), force_not_quantize=True, shape=shape).sample

    def codebook_usage(self, indices: torch.Tensor) -> dict[str, float]:
        """Fraction of the codebook used by `indices` and the perplexity of their histogram."""
        return codebook_statistics(indices, self.codebook_size)


__all__ = ["VQTokenizer", "EMAVectorQuantizer", "codebook_statistics"]
