"""VQ and palette tokenizers: parity with diffusers' VQModel, EMA codebook, statistics, save/load, bad input."""

import pytest
import torch
from diffusers import VQModel

from hf_specdec import PaletteTokenizer, VQTokenizer
from hf_specdec.models.vq_tokenizer import EMAVectorQuantizer, codebook_statistics
from hf_specdec.pipeline import check_tokenizer_matches, sample_images
from tests.utils import random_images, tiny_config, tiny_model, tiny_vq

def test_indices_round_trip_equals_vqmodel_forward(tmp_path):
    tokenizer = tiny_vq()
    x = random_images()
    codes = tokenizer.encode_to_indices(x)
    assert codes.shape == (2, 8, 8) and codes.dtype == torch.int64
    assert tokenizer.grid_size() == (8, 8)
    decoded = tokenizer.decode_from_indices(codes)
    with torch.no_grad():
        reference = VQModel.forward(tokenizer, x).sample
    torch.testing.assert_close(decoded, reference, atol=1e-5, rtol=1e-5)
    # and an unmodified diffusers VQModel reading the same folder reconstructs the same images
    tokenizer.save_pretrained(tmp_path)
    plain = VQModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(plain(x).sample, decoded, atol=1e-5, rtol=1e-5)


def test_save_load_round_trip(tmp_path):
    tokenizer = tiny_vq()
    tokenizer.save_pretrained(tmp_path)
    assert list(tmp_path.glob("*.safetensors"))
    loaded = VQTokenizer.from_pretrained(tmp_path).eval()
    x = random_images()
    assert torch.equal(loaded.encode_to_indices(x), tokenizer.encode_to_indices(x))


def test_ema_codebook_learns_restarts_and_saves(tmp_path):
    tokenizer = tiny_vq(use_ema=True, dead_code_threshold=1.0)
    quantizer = tokenizer.quantize
    assert isinstance(quantizer, EMAVectorQuantizer)
    assert not quantizer.embedding.weight.requires_grad
    before = quantizer.embedding.weight.clone()
    tokenizer.train()
    x = random_images(4)
    with torch.no_grad():
        latents = tokenizer.encode(x).latents
        z = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
        counts = torch.bincount(torch.cdist(z, before).argmin(1), minlength=16)
        tokenizer(x)
    after = quantizer.embedding.weight
    assert not torch.equal(before, after)
    # a code that got no vector this step decays under the threshold (1.0) and restarts on an encoder output
    dead = counts == 0
    assert dead.any() and (counts > 0).any()
    distance_to_nearest_output = (after[dead][:, None] - z[None]).norm(dim=-1).min(dim=1).values
    assert distance_to_nearest_output.max() < 1e-6
    tokenizer.save_pretrained(tmp_path)
    loaded = VQTokenizer.from_pretrained(tmp_path)
    assert isinstance(loaded.quantize, EMAVectorQuantizer)
    assert torch.equal(loaded.quantize.ema_cluster_size, quantizer.ema_cluster_size)
    assert torch.equal(loaded.quantize.embedding.weight, after)


def test_ema_loss_is_commitment_only():
    tokenizer = tiny_vq(use_ema=True, commitment_beta=0.5).train()
    z = torch.randn(2, 8, 4, 4, requires_grad=True)
    _, loss, _ = tokenizer.quantize(z)
    loss.backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_codebook_statistics():
    stats = codebook_statistics(torch.tensor([0, 1, 2, 3] * 5), codebook_size=8)
    assert stats["usage"] == pytest.approx(0.5)
    assert stats["perplexity"] == pytest.approx(4.0, rel=1e-5)
    assert codebook_statistics(torch.zeros(10, dtype=torch.long), 8)["perplexity"] == pytest.approx(1.0)


def test_palette_tokenizer_fits_encodes_decodes(tmp_path):
    from hf_specdec.data import images_to_tensor, load_digits_dataset

    digits = images_to_tensor(load_digits_dataset()["train"][:64]["image"], 32)
    palette = PaletteTokenizer(num_colors=8, grid_size=8, image_size=32).fit(digits)
    codes = palette.encode_to_indices(digits)
    assert codes.shape == (64, 8, 8)
    decoded = palette.decode_from_indices(codes)
    assert decoded.shape == (64, 3, 32, 32)
    # an image painted in palette colours is reproduced exactly
    again = palette.encode_to_indices(decoded)
    assert torch.equal(again, codes)
    # and reconstruction beats the mean colour
    pooled = torch.nn.functional.interpolate(torch.nn.functional.adaptive_avg_pool2d(digits, 8), size=32)
    assert (decoded - pooled).pow(2).mean() < (pooled - pooled.mean()).pow(2).mean() / 4
    palette.save_pretrained(tmp_path)
    assert torch.equal(PaletteTokenizer.from_pretrained(tmp_path).encode_to_indices(digits), codes)


BAD_IMAGES = [
    # images, words the error must contain
    (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), ["images", "dtype torch.uint8", "from_uint8"]),
    (torch.rand(1, 3, 32, 32) * 255, ["images", "[-1, 1]", "255"]),  # float pixels: every code would be wrong
    (torch.full((1, 3, 32, 32), float("nan")), ["images", "[-1, 1]", "nan"]),
    (torch.zeros(1, 1, 32, 32), ["images", "(B, 3, H, W)", "(1, 1, 32, 32)"]),
    (torch.zeros(3, 32, 32), ["images", "(B, 3, H, W)", "(3, 32, 32)"]),
    (torch.zeros(1, 3, 30, 30), ["images", "multiples of 4"]),
    (torch.zeros(1, 3, 4, 4), ["images", "1x1 token grid"]),  # a group-norm error naming no argument before
]


@pytest.mark.parametrize("images, words", BAD_IMAGES, ids=["uint8", "0-255", "nan", "1-channel", "3-dim", "30x30", "4x4"])
@pytest.mark.parametrize("kind", ["vq", "palette"])
def test_images_in_the_wrong_form_are_refused(images, words, kind):
    if kind == "palette":
        if "multiples" in words[-1] or "1x1" in words[-1]:
            pytest.skip("the palette tokenizer pools any size")
        tokenizer = PaletteTokenizer(num_colors=4, grid_size=8, image_size=32)
    else:
        tokenizer = tiny_vq()
    with pytest.raises(ValueError) as error:
        tokenizer.encode_to_indices(images)
    for word in words:
        assert word in str(error.value), str(error.value)
    pixels = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)  # the documented conversion works
    from hf_specdec.images import from_uint8

    assert tokenizer.encode_to_indices(from_uint8(pixels)).shape == (1, 8, 8)


def test_bad_tokenizer_input():
    tokenizer = tiny_vq()
    with pytest.raises(ValueError, match="indices"):
        tokenizer.decode_from_indices(torch.full((1, 8, 8), 16))
    for not_codes in (torch.full((1, 8, 8), 0.5), torch.zeros(1, 8, 8, dtype=torch.bool), [[[0]]]):
        with pytest.raises(ValueError, match="indices.*integer"):  # truncated or misread before
            tokenizer.decode_from_indices(not_codes)
    images = torch.rand(2, 3, 32, 32) * 2 - 1  # float64 pixels are encoded like float32 ones
    assert torch.equal(tokenizer.encode_to_indices(images.double()), tokenizer.encode_to_indices(images))
    with pytest.raises(ValueError, match="block_out_channels"):
        VQTokenizer(block_out_channels=(30, 30, 30))


def test_tokenizer_must_match_the_model():
    model = tiny_model(codebook_size=16, grid_h=8, grid_w=8)
    check_tokenizer_matches(tiny_vq(), model.config)
    with pytest.raises(ValueError, match="tokenizer"):
        check_tokenizer_matches(tiny_vq(num_vq_embeddings=32), model.config)
    with pytest.raises(ValueError, match="tokenizer"):
        check_tokenizer_matches(tiny_vq(), tiny_config(codebook_size=16, grid_h=4, grid_w=4))
    with pytest.raises(ValueError, match="tokenizer_path.*64x64"):  # the data's resolution decides the grid
        check_tokenizer_matches(tiny_vq(), model.config, image_size=64, argument="tokenizer_path")


def test_dataset_must_match_the_model():
    from hf_specdec.pipeline import check_dataset_matches

    names = [str(i) for i in range(4)]
    check_dataset_matches(tiny_config(num_classes=4), names)  # transformers' default LABEL_i names: count only
    check_dataset_matches(tiny_config(num_classes=4, id2label=dict(enumerate(names))), names)
    check_dataset_matches(tiny_config(num_classes=0), ["anything"])  # unconditional: any images
    with pytest.raises(ValueError, match="dataset.*3 classes"):
        check_dataset_matches(tiny_config(num_classes=4), names[:3])
    with pytest.raises(ValueError, match="dataset.*cat"):
        check_dataset_matches(tiny_config(num_classes=4, id2label=dict(enumerate(names))), ["cat", "dog", "a", "b"])


def test_sample_images_end_to_end():
    model = tiny_model(codebook_size=16, grid_h=8, grid_w=8)
    pictures, codes = sample_images(model, tiny_vq(), labels=[0, 2], do_sample=True, top_k=None)
    assert pictures.shape == (2, 3, 32, 32) and codes.shape == (2, 8, 8)


@pytest.mark.parametrize("change, name", [
    ({"norm_num_groups": 0}, "norm_num_groups"), ({"latent_channels": -1}, "latent_channels"),
    ({"layers_per_block": 0}, "layers_per_block"), ({"vq_embed_dim": 0}, "vq_embed_dim"),
    ({"num_vq_embeddings": 1}, "num_vq_embeddings"), ({"block_out_channels": (32, 48, 32)}, "block_out_channels"),
    ({"ema_decay": float("nan")}, "ema_decay"), ({"commitment_beta": -0.5}, "commitment_beta"),
    ({"dead_code_threshold": float("inf")}, "dead_code_threshold"), ({"sample_size": 0}, "sample_size"),
])
def test_a_bad_tokenizer_config_names_the_field(change, name):
    """A bad size or quantizer setting is a ValueError naming the config field (not a ZeroDivisionError or a torch
    RuntimeError from inside diffusers), for `from_pretrained` configs as for new tokenizers."""
    from tests.utils import TINY_VQ

    with pytest.raises(ValueError, match=f"`{name}`"):
        VQTokenizer(**{**TINY_VQ, **change})
