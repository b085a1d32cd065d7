from ..images import images_to_tensor, tensor_to_images
from .images import (
    DOG_SYNSET_RANGE,
    filter_dog_classes,
    is_dog_synset,
    load_digits_dataset,
    load_image_dataset,
    load_imagefolder,
    load_mini_imagenet_dogs,
    split_dataset,
)
from .photos import PHOTOGRAPHS, load_photos_dataset
from .config import DataArguments
from .tokens import (
    collate_tokens,
    drop_class,
    precompute_tokens,
    token_sequences,
    token_splits,
    tokenizer_fingerprint,
)
