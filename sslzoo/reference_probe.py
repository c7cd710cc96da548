"""The `reference` linear-probe protocol: the papers' probe, trained on augmented images through the
frozen encoder, with its settings per method.

SupContrast's and SelfCon's `main_linear.py` (the protocol behind the SupCon, SimCLR-on-SupContrast
and SelfCon numbers) freeze the encoder in eval mode and train one linear layer on its pooled
features, with a fresh RandomResizedCrop(scale 0.2-1) and horizontal flip of every training image in
every epoch, plain SGD (momentum 0.9, no weight decay, batch 512, 100 epochs) and a step decay of the
learning rate; the test split is scored with the test-time preprocessing. The learning rate and the
decay are per method (`REFERENCE_PROBES`):

| method              | lr | decay at (x factor) | source                                              |
|---------------------|----|---------------------|-----------------------------------------------------|
| supcon              | 5  | 60, 75, 90 (x0.2)   | SupContrast README (SupCon), main_linear.py defaults |
| selfcon             | 3  | 60, 80 (x0.1)       | SelfCon scripts/selfcon_represent.sh                 |
| every other method  | 1  | 60, 75, 90 (x0.2)   | SupContrast README (SimCLR), main_linear.py defaults |

SelfCon's ImageNet script probes for 40 epochs at lr 5 (decay 20, 30); the zoo keeps the CIFAR
settings on every dataset so that one protocol means one thing. The features are the encoder's
raw pooled features (no standardisation, unlike the `fast` protocol). The augmentation is passed
in (`augment`): the training application supplies its batched crops and flips.
A GPU protocol: each epoch runs the encoder over the whole training split.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .evaluation import topk_accuracy


@dataclass(frozen=True)
class ReferenceProbe:
    """Settings of one reference probe (SupContrast / SelfCon `main_linear.py`)."""

    lr: float
    epochs: int = 100
    milestones: tuple[int, ...] = (60, 75, 90)
    gamma: float = 0.2
    batch_size: int = 512
    momentum: float = 0.9
    weight_decay: float = 0.0
    crop_scale: tuple[float, float] = (0.2, 1.0)
    hflip: float = 0.5
    source: str = field(default="", compare=False)

    def with_overrides(self, epochs: int | None = None, lr: float | None = None) -> ReferenceProbe:
        """These settings with another length or learning rate; the decay epochs keep their place
        in the schedule (60 of 100 epochs is 60 % of any length)."""
        if epochs is None and lr is None:
            return self
        new_epochs = self.epochs if epochs is None else int(epochs)
        return replace(
            self,
            lr=self.lr if lr is None else float(lr),
            epochs=new_epochs,
            milestones=tuple(max(1, round(m * new_epochs / self.epochs)) for m in self.milestones),
        )

    def to_json(self) -> dict[str, Any]:
        """What a result records beside its accuracy."""
        data = asdict(self)
        data.update(
            milestones=list(self.milestones),
            crop_scale=list(self.crop_scale),
            schedule="step",
            features="augmented crops and flips through the frozen encoder (eval mode)",
        )
        return data


#: The settings of methods whose reference code probes differently from SupContrast's SimCLR.
REFERENCE_PROBES: dict[str, ReferenceProbe] = {
    "supcon": ReferenceProbe(
        lr=5.0, source="SupContrast README (SupCon): main_linear.py --batch_size 512 --learning_rate 5"
    ),
    "selfcon": ReferenceProbe(
        lr=3.0,
        milestones=(60, 80),
        gamma=0.1,
        source="SelfCon scripts/selfcon_represent.sh: main_linear.py lr 3, 100 epochs, decay 60,80 x0.1",
    ),
}
#: Every other method (SimCLR-style encoders): SupContrast's SimCLR probe.
DEFAULT_REFERENCE_PROBE = ReferenceProbe(
    lr=1.0, source="SupContrast README (SimCLR): main_linear.py --batch_size 512 --learning_rate 1"
)


def reference_probe_for(method: str | None = None, host: str | None = None) -> ReferenceProbe:
    """The reference probe of a method (a registry name, else its host), SupContrast's SimCLR one otherwise."""
    return REFERENCE_PROBES.get(method or "") or REFERENCE_PROBES.get(host or "") or DEFAULT_REFERENCE_PROBE


Augment = Callable[[torch.Tensor], torch.Tensor]
TrainImages = torch.Tensor | Dataset


def reference_linear_probe(
    encoder: nn.Module,
    train_images: TrainImages,
    train_labels: torch.Tensor | None,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    num_classes: int,
    *,
    augment: Augment,
    settings: ReferenceProbe = DEFAULT_REFERENCE_PROBE,
    device: str | torch.device | None = None,
    autocast_dtype: torch.dtype | None = None,
    seed: int = 0,
    workers: int = 0,
    progress: bool = False,
) -> dict[str, float]:
    """Top-1/top-5 (percent) on `test_features` of a linear layer trained on augmented training images.

    `train_images` is a uint8 (N, 3, H, W) tensor with `train_labels`, or a Dataset of (uint8 image,
    label) pairs (e.g. an image folder; `train_labels` None). `augment` maps a uint8 batch to a
    normalised float batch with a random crop and flip of each image. `test_features` are the
    encoder's features of the test split under its test-time preprocessing. Labels -1 are skipped.
    The global random state is left as it was; `seed` fixes the head, the order and the crops.
    """
    device = torch.device(device) if device is not None else next(encoder.parameters()).device
    was_training = encoder.training
    encoder.eval()
    generator = torch.Generator().manual_seed(seed)
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)  # the augmentation's crops and flips
            features_dim = int(getattr(encoder, "num_features", test_features.shape[1]))
            head = nn.Linear(features_dim, num_classes).to(device)
            _init_like_nn_linear(head, generator)
            optimizer = torch.optim.SGD(
                head.parameters(), lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay
            )
            schedule = torch.optim.lr_scheduler.MultiStepLR(
                optimizer, milestones=list(settings.milestones), gamma=settings.gamma
            )  # stepped once per epoch: epoch 61 (1-based) is the first at lr x gamma, as main_linear.py
            for _ in tqdm(range(settings.epochs), desc="reference probe", disable=not progress, leave=False):
                for images, labels in _epoch_batches(
                    train_images, train_labels, settings.batch_size, generator, device, workers
                ):
                    labelled = labels >= 0
                    if not bool(labelled.any()):
                        continue
                    with torch.no_grad(), torch.autocast(
                        device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None
                    ):
                        features = encoder(augment(images[labelled]))
                    loss = F.cross_entropy(head(features.float()), labels[labelled])
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                schedule.step()
    finally:
        encoder.train(was_training)
    with torch.no_grad():
        return topk_accuracy(head(test_features.to(device).float()), test_labels.to(device))


def _init_like_nn_linear(head: nn.Linear, generator: torch.Generator) -> None:
    """nn.Linear's own initialisation (the official probes keep it), drawn from `generator`."""
    bound = 1.0 / math.sqrt(head.in_features)
    with torch.no_grad():
        weight = torch.empty(head.weight.shape).uniform_(-bound, bound, generator=generator)
        bias = torch.empty(head.bias.shape).uniform_(-bound, bound, generator=generator)
        head.weight.copy_(weight)
        head.bias.copy_(bias)


def _epoch_batches(
    images: TrainImages,
    labels: torch.Tensor | None,
    batch_size: int,
    generator: torch.Generator,
    device: torch.device,
    workers: int,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of (uint8 images, labels) batches on `device`, in a fresh random order."""
    order = torch.randperm(len(images), generator=generator)
    if isinstance(images, torch.Tensor):
        if labels is None:
            raise ValueError("reference_linear_probe needs train_labels with a tensor of images.")
        for indices in order.split(batch_size):
            indices = indices.to(images.device)
            yield images[indices].to(device, non_blocking=True), labels[indices.to(labels.device)].to(device)
        return
    loader = DataLoader(
        images,
        batch_sampler=[chunk.tolist() for chunk in order.split(batch_size)],
        num_workers=workers,
        pin_memory=device.type == "cuda",
    )
    for batch, batch_labels in loader:
        yield batch.to(device, non_blocking=True), torch.as_tensor(batch_labels).to(device)
