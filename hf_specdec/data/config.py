"""`DataArguments`: which images, at what resolution, split how, and where the token cache lives."""

from dataclasses import dataclass, field

from datasets import DatasetDict

from ..hub import check_output_dir
from .images import DATASETS, DEFAULT_REPO_ID, check_split_fractions, load_image_dataset
from .photos import check_crop_scale


MAX_RESOLUTION = 1024  # pixels: a 16x-downsampling tokenizer gives 4,096 tokens per image there (LlamaGen: 256-512)


@dataclass
class DataArguments:
    dataset: str = field(default="digits", metadata={"help": "digits | photos | mini-imagenet-dogs | imagefolder."})
    data_dir: str | None = field(default=None, metadata={"help": "Folder of class sub-folders, for imagefolder."})
    repo_id: str = field(default=DEFAULT_REPO_ID, metadata={"help": "Hub dataset for mini-imagenet-dogs."})
    crops_per_photo: int = field(default=400, metadata={"help": "photos: square crops cut from each photograph."})
    min_scale: float = field(default=0.5, metadata={"help": "photos: smallest crop side, a fraction of the photograph's "
                                                            "shorter side (0.5-1.0: whole scenes; smaller: details)."})
    max_scale: float = field(default=1.0, metadata={"help": "photos: largest crop side, the same fraction."})
    resolution: int = field(default=32, metadata={"help": "Images are resized to resolution x resolution."})
    val_fraction: float = field(default=0.1, metadata={"help": "Fraction of images held out for validation."})
    test_fraction: float = field(default=0.1, metadata={"help": "Fraction of images held out for testing."})
    split_seed: int = field(default=0, metadata={"help": "Seed of the deterministic stratified split."})
    token_cache_dir: str = field(default="outputs/token-cache", metadata={"help": "Arrow cache of precomputed tokens."})

    def __post_init__(self):
        if self.dataset not in DATASETS:
            raise ValueError(f"`dataset` must be one of {', '.join(DATASETS)}; got {self.dataset!r}.")
        if self.dataset == "imagefolder" and not self.data_dir:
            raise ValueError("`data_dir` is required when `dataset` is imagefolder.")
        # An option that the chosen dataset does not read is a mistake, not something to ignore silently.
        if self.data_dir and self.dataset != "imagefolder":
            raise ValueError(f"`data_dir` is read only with `dataset` imagefolder, got dataset {self.dataset!r}: pass "
                             "`--dataset imagefolder` to use the folder, or drop `--data_dir`.")
        if self.repo_id != DEFAULT_REPO_ID and self.dataset != "mini-imagenet-dogs":
            raise ValueError(f"`repo_id` is read only with `dataset` mini-imagenet-dogs, got dataset {self.dataset!r}.")
        if not self.repo_id or not isinstance(self.repo_id, str):
            raise ValueError(f"`repo_id` must be a Hub dataset id such as {DEFAULT_REPO_ID!r}, got {self.repo_id!r}.")
        if not 8 <= self.resolution <= MAX_RESOLUTION:  # a typo like 3200 built the dataset in memory at that size
            raise ValueError(f"`resolution` must be in [8, {MAX_RESOLUTION}] (pixels on a side), got {self.resolution}.")
        if not 0 <= self.split_seed < 2**32:
            raise ValueError(f"`split_seed` must be in [0, 2**32), got {self.split_seed}.")
        if self.crops_per_photo < 1:
            raise ValueError(f"`crops_per_photo` must be >= 1, got {self.crops_per_photo}.")
        for name in ("crops_per_photo", "min_scale", "max_scale"):
            if getattr(self, name) != getattr(type(self), name) and self.dataset != "photos":
                raise ValueError(f"`{name}` is read only with `dataset` photos, got dataset {self.dataset!r}: drop "
                                 f"`--{name}`.")
        check_crop_scale(self.min_scale, self.max_scale)  # the loader's rule, before any work
        check_split_fractions(self.val_fraction, self.test_fraction)  # `split_dataset`'s rule, before any work
        check_output_dir(self.token_cache_dir, "token_cache_dir")  # a file in the way surfaced after the tokenizer ran

    def load(self) -> DatasetDict:
        """The `train` / `validation` / `test` splits of the configured images."""
        return load_image_dataset(self.dataset, resolution=self.resolution, data_dir=self.data_dir, repo_id=self.repo_id,
                                  val_fraction=self.val_fraction, test_fraction=self.test_fraction, seed=self.split_seed,
                                  crops_per_photo=self.crops_per_photo, min_scale=self.min_scale,
                                  max_scale=self.max_scale)
