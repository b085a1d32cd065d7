"""Training the VQ tokenizer: reconstruction + VQ (commitment/codebook) losses, codebook statistics, a grid of
reconstructions next to the weights."""

import json
import os
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..cli import check_options_read
from ..data import DataArguments
from ..hub import check_output_not_input, json_safe
from ..images import images_to_tensor
from ..models import VQTokenizer
from ..models.vq_tokenizer import check_tokenizer_sizes
from ..images import save_image_grid
from .trainer import TrainingArguments, check_output_free, make_accelerator, train


@dataclass
class TokenizerArguments:
    codebook_size: int = field(default=256, metadata={"help": "Number of VQ codes (the GPT's codebook_size)."})
    block_out_channels: list[int] = field(default_factory=lambda: [32, 64, 64], metadata={"help": "Channels per level; the grid is resolution / 2**(levels-1)."})
    latent_channels: int = field(default=32, metadata={"help": "Encoder output channels."})
    vq_embed_dim: int = field(default=32, metadata={"help": "Codebook vector size."})
    layers_per_block: int = field(default=1, metadata={"help": "ResNet layers per level."})
    norm_num_groups: int = field(default=32, metadata={"help": "GroupNorm groups (divides every channel count)."})
    use_ema: bool = field(default=True, metadata={"help": "EMA codebook with dead-code restart."})
    ema_decay: float = field(default=0.99, metadata={"help": "EMA decay."})
    dead_code_threshold: float = field(default=1.0, metadata={"help": "EMA count under which a code restarts."})
    commitment_beta: float = field(default=0.25, metadata={"help": "Commitment weight (EMA quantizer)."})
    reconstruction_loss: str = field(default="mse", metadata={"help": "mse | l1."})

    def __post_init__(self):
        if self.reconstruction_loss not in ("mse", "l1"):
            raise ValueError(f"`reconstruction_loss` must be mse or l1, got {self.reconstruction_loss!r}.")
        # diffusers' gradient-trained quantizer (use_ema false) reads none of the EMA quantizer's settings
        check_options_read(self, "use_ema", {name: (True,) for name in ("ema_decay", "dead_code_threshold",
                                                                        "commitment_beta")})
        # the tokenizer's own checks, under these arguments' names, before any data is loaded
        check_tokenizer_sizes(
            codebook_size=self.codebook_size, block_out_channels=self.block_out_channels,
            norm_num_groups=self.norm_num_groups, ema_decay=self.ema_decay,
            dead_code_threshold=self.dead_code_threshold, commitment_beta=self.commitment_beta,
            latent_channels=self.latent_channels, vq_embed_dim=self.vq_embed_dim, layers_per_block=self.layers_per_block)

    def build(self, resolution: int) -> VQTokenizer:
        levels = len(self.block_out_channels)
        return VQTokenizer(
            down_block_types=("DownEncoderBlock2D",) * levels,
            up_block_types=("UpDecoderBlock2D",) * levels,
            block_out_channels=tuple(self.block_out_channels),
            layers_per_block=self.layers_per_block,
            latent_channels=self.latent_channels,
            vq_embed_dim=self.vq_embed_dim,
            sample_size=resolution,
            num_vq_embeddings=self.codebook_size,
            norm_num_groups=self.norm_num_groups,
            use_ema=self.use_ema,
            ema_decay=self.ema_decay,
            dead_code_threshold=self.dead_code_threshold,
            commitment_beta=self.commitment_beta,
        )


def psnr(reconstruction: torch.Tensor, images: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB for images in [-1, 1]."""
    mse = F.mse_loss(reconstruction.clamp(-1, 1), images).item()
    return 10 * torch.log10(torch.tensor(4.0 / max(mse, 1e-12))).item()


@torch.no_grad()
def write_tokenizer_report(tokenizer: VQTokenizer, images: torch.Tensor, output_dir: str, steps: int | None = None):
    """`training_metrics.json` (validation PSNR, codebook usage, parameters) and `reconstructions.png`
    (originals above, reconstructions below) next to a trained tokenizer."""
    tokenizer.eval()
    reconstruction, _, indices = tokenizer.reconstruct(images)
    metrics = {"val_psnr_db": psnr(reconstruction, images), **tokenizer.codebook_usage(indices),
               "parameters": tokenizer.num_parameters(), "steps": steps}
    with open(os.path.join(output_dir, "training_metrics.json"), "w") as f:
        json.dump(json_safe(metrics), f, indent=2, allow_nan=False)
    save_image_grid(torch.cat([images[:32], reconstruction[:32]]).clamp(-1, 1), os.path.join(output_dir, "reconstructions.png"),
                    nrow=8)
    return metrics


def train_tokenizer(data_args: DataArguments, model_args: TokenizerArguments, args: TrainingArguments) -> VQTokenizer:
    check_output_not_input(args.output_dir, data_dir=data_args.data_dir)
    check_output_free(args)  # a saved model there is replaced only when asked
    resolution = data_args.resolution
    factor = 2 ** (len(model_args.block_out_channels) - 1)
    if resolution % factor:  # before any data is loaded
        raise ValueError(f"`resolution` must be a multiple of {factor} for a tokenizer of "
                         f"{len(model_args.block_out_channels)} `block_out_channels` levels (it halves the image "
                         f"{len(model_args.block_out_channels) - 1} times), got {resolution}.")
    accelerator = make_accelerator(args)
    splits = data_args.load()
    tokenizer = model_args.build(resolution)

    def collate(rows):
        return images_to_tensor([row["image"] for row in rows], resolution)

    val_images = collate(splits["validation"].select(range(min(256, len(splits["validation"])))))

    def loss_fn(model, images, step):
        reconstruction, vq_loss, indices = model(images, return_indices=True)  # through DDP: gradients sync
        recon = (F.mse_loss if model_args.reconstruction_loss == "mse" else F.l1_loss)(reconstruction, images)
        usage = accelerator.unwrap_model(model).codebook_usage(indices)
        return recon + vq_loss, {"reconstruction": recon.item(), "vq": vq_loss.item(), **usage}

    @torch.no_grad()
    def eval_fn(model, step):
        images = val_images.to(accelerator.device)
        reconstruction, _, indices = model.reconstruct(images)
        return {"psnr": psnr(reconstruction, images), **model.codebook_usage(indices)}

    def save_fn(model, output_dir):
        model.save_pretrained(output_dir)
        write_tokenizer_report(model, val_images.to(accelerator.device), output_dir, args.max_steps)

    run_config = {"data": vars(data_args), "tokenizer": vars(model_args)}
    return train(tokenizer, splits["train"], loss_fn, args, accelerator, collate, eval_fn, save_fn, run_config)
