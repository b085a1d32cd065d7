"""A small digits classifier whose penultimate features replace Inception's for FID / IS on the embedded digits.

Inception weights cannot be downloaded offline, and Inception features of 32x32 handwritten digits mean little
anyway; a classifier trained on the digits' own train split gives features and class posteriors that do.
"""

import json
import os

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from ..hub import load_pretrained
from ..images import UNIT_RANGE_HINT, check_images, from_uint8, in_unit_range
from ..models.safetensors_only import SafetensorsOnlyMixin


class DigitsClassifier(SafetensorsOnlyMixin, ModelMixin, ConfigMixin):
    """Images `(B, 3, H, W)` in [-1, 1] -> logits `(B, num_classes)`; `features()` gives `(B, feature_dim)`."""

    @register_to_config
    def __init__(self, num_classes: int = 10, channels: tuple[int, ...] = (32, 64, 128), in_channels: int = 3):
        super().__init__()
        layers, previous = [], in_channels
        for width in channels:
            layers += [nn.Conv2d(previous, width, 3, padding=1), nn.BatchNorm2d(width), nn.GELU(), nn.MaxPool2d(2)]
            previous = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(previous, num_classes)
        self.feature_dim = previous

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images).mean(dim=(2, 3))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def metric_images(values, argument: str, classifier_path: str, minimum: int = 1) -> torch.Tensor:
    """The `predictions` / `references` of the FID and IS metric modules as a float tensor `(N, 3, H, W)` in
    [-1, 1]; `ValueError` naming `argument` for pixels in [0, 255], NaN, another shape, fewer than `minimum` images,
    or another resolution than the classifier was trained at (its `metrics.json`, where the folder has one): any of
    these gave a number (an FID of millions for uint8 pixels) instead of an error."""
    images = torch.as_tensor(np.asarray(values, dtype=np.float32))
    value_range = check_images(images, argument=argument)
    if len(images) > 1 and in_unit_range(value_range):  # an FID 8x too good, or 100x too bad against [-1, 1] references
        raise ValueError(f"`{argument}` must be images in [-1, 1], got values in [0, 1] only: {UNIT_RANGE_HINT}.")
    if len(images) < minimum:
        raise ValueError(f"`{argument}` must hold at least {minimum} images, got {len(images)}.")
    recorded = os.path.join(str(classifier_path), "metrics.json")
    if os.path.isfile(recorded):
        with open(recorded) as f:
            resolution = json.load(f).get("resolution")
        if resolution and tuple(images.shape[-2:]) != (resolution, resolution):
            raise ValueError(f"`{argument}` are {images.shape[-2]}x{images.shape[-1]} images, but `classifier_path` "
                             f"{classifier_path!r} was trained at {resolution}x{resolution}: resize them first.")
    return images


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] or float [0, 1] (torchmetrics' conventions) -> float [-1, 1]."""
    if images.dtype == torch.uint8:
        return from_uint8(images)
    return images.float() * 2.0 - 1.0


class ClassifierFeatures(nn.Module):
    """torchmetrics feature extractor: `kind="features"` for FID, `"logits"` for the Inception Score."""

    def __init__(self, classifier: DigitsClassifier, kind: str = "features"):
        super().__init__()
        if kind not in ("features", "logits"):
            raise ValueError(f"`kind` must be features or logits, got {kind!r}.")
        self.classifier = classifier.eval()
        self.kind = kind
        self.num_features = classifier.feature_dim if kind == "features" else classifier.config.num_classes

    def train(self, mode: bool = True) -> "ClassifierFeatures":
        """Always eval mode (as torchmetrics' own Inception): a parent's `.train()` (Lightning's, on a module that holds
        a torchmetrics FID built on this extractor) put the BatchNorm layers on batch statistics, so the features
        depended on the batch, and every update moved the classifier's running statistics."""
        return super().train(False)

    @classmethod
    def from_pretrained(cls, classifier_path: str, kind: str = "features") -> "ClassifierFeatures":
        """The extractor of the `DigitsClassifier` saved in `classifier_path` (a folder or Hub repo id)."""
        return cls(load_pretrained(DigitsClassifier, classifier_path, "classifier_path"), kind)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = to_model_range(images)
        return self.classifier.features(x) if self.kind == "features" else self.classifier(x)


def train_classifier(train_images, train_labels, epochs: int = 15, batch_size: int = 64, lr: float = 2e-3, seed: int = 0):
    """Fit a `DigitsClassifier` on `(N, 3, H, W)` images in [-1, 1] with small random shifts as augmentation. Fewer
    images than `batch_size` train in batches of all of them (a set of 10 images made no step and torch's scheduler
    failed naming `total_steps`)."""
    if len(train_images) < 2:
        raise ValueError(f"The classifier needs at least 2 training images, got {len(train_images)}: add images.")
    classes = torch.as_tensor(train_labels).unique().numel()
    if classes < 2:  # nothing to tell apart: IS is 1 for any images, and the features FID reads learn nothing
        raise ValueError(f"The classifier needs images of at least 2 classes, got {classes}: its features (FID) and "
                         "class probabilities (IS) are learnt by telling classes apart.")
    torch.manual_seed(seed)
    model = DigitsClassifier(num_classes=int(train_labels.max()) + 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    batch_size = min(batch_size, len(train_images))
    steps = epochs * (len(train_images) // batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=steps)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(train_images))
        for i in range(0, len(order) - batch_size + 1, batch_size):
            index = order[i : i + batch_size]
            x = train_images[index]
            shift = torch.randint(-2, 3, (2,))
            x = torch.roll(x, shifts=(int(shift[0]), int(shift[1])), dims=(2, 3))
            loss = F.cross_entropy(model(x), train_labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: DigitsClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    return (model(images).argmax(-1) == labels).float().mean().item()
