"""The `Encoder`: a headless backbone that carries everything needed to use it correctly.

Preprocessing (input size, mean/std, interpolation) and provenance (method, dataset, epochs,
recipe, measured metrics) travel with the weights in `config.json`, so a loaded encoder cannot
be fed the wrong normalisation and always says where it came from.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin, load_torch_model
from torch import nn

from . import weight_files
from .backbones import BACKBONES, RESNET_STAGES, STEMS, num_features, torchvision_resnet
from .errors import ConfigError
from .preprocessing import CIFAR10_MEAN, CIFAR10_STD, ImageLike, as_batch, eval_transform

#: The constructor arguments, which are also the keys of `config.json`.
CONFIG_FIELDS = ("backbone", "stem", "input_size", "mean", "std", "interpolation", "provenance", "num_classes")
#: Input sides the preprocessing accepts: enough pixels for a ResNet, few enough to fit in memory.
INPUT_SIZE_RANGE = (8, 4096)
#: Resize filters torchvision applies to image tensors (PIL-only filters would fail at embed time).
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "nearest-exact")


def check_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The encoder arguments in `config`, checked one field at a time; `ConfigError` names the field.

    Every value is checked before anything is built, so a bad `config.json` is refused when it is
    loaded, not when the first image is embedded: `input_size` a whole number in
    `INPUT_SIZE_RANGE`, `mean` three finite numbers in [0, 1], `std` three finite numbers in
    (0, 1], `interpolation` one of `INTERPOLATIONS`, `provenance` a JSON object, `num_classes`
    (the fine-tuning head's classes, absent or 0 without one) a whole number >= 0.
    """
    if not isinstance(config, Mapping):
        raise ConfigError(f"the config must be a JSON object of {list(CONFIG_FIELDS)} (got {_show(config)}).")
    unknown = sorted(set(config) - set(CONFIG_FIELDS))
    if unknown:
        raise ConfigError(
            f"unknown field(s) {unknown}; an sslzoo encoder config holds {list(CONFIG_FIELDS)} "
            "(a newer sslzoo may have written it: upgrade sslzoo)."
        )
    checked = dict(config)
    for field, choices in (("backbone", sorted(BACKBONES)), ("stem", list(STEMS))):
        if field in config and config[field] not in choices:
            raise ConfigError(f"{field}: must be one of {choices} (got {_show(config[field])}).")
    if "input_size" in config:
        value, (low, high) = config["input_size"], INPUT_SIZE_RANGE
        if not _is_number(value) or not float(value).is_integer() or not low <= value <= high:
            raise ConfigError(
                f"input_size: must be a whole number of pixels from {low} to {high} (got {_show(value)})."
            )
        checked["input_size"] = int(value)
    for field, low_open, what in (("mean", False, "in [0, 1]"), ("std", True, "in (0, 1]")):
        if field not in config:
            continue
        value = config[field]
        if hasattr(value, "tolist"):  # a NumPy array or a tensor
            value = value.tolist()
        numbers = list(value) if isinstance(value, (list, tuple)) else None
        if numbers is None or len(numbers) != 3 or not all(_is_number(number) for number in numbers):
            raise ConfigError(f"{field}: must be 3 numbers, one per RGB channel (got {_show(value)}).")
        if not all((0 < n if low_open else 0 <= n) and n <= 1 for n in numbers):
            raise ConfigError(
                f"{field}: each value must be {what} for pixels scaled to [0, 1] (got {_show(value)})."
            )
        checked[field] = tuple(float(number) for number in numbers)
    if "interpolation" in config and config["interpolation"] not in INTERPOLATIONS:
        raise ConfigError(
            f"interpolation: must be one of {list(INTERPOLATIONS)} (got {_show(config['interpolation'])})."
        )
    if "num_classes" in config:
        value = config["num_classes"]
        if not _is_number(value) or not float(value).is_integer() or value < 0:
            raise ConfigError(f"num_classes: must be a whole number >= 0, 0 for no head (got {_show(value)}).")
        checked["num_classes"] = int(value)
    provenance = config.get("provenance")
    if provenance is not None and not isinstance(provenance, Mapping):
        raise ConfigError(f"provenance: must be a JSON object (got {_show(provenance)}).")
    return checked


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


#: The stages `Encoder.feature_maps` can return, and their widths per backbone.
FEATURE_STAGES = ("layer1", "layer2", "layer3", "layer4")
STAGE_WIDTHS = {"resnet18": (64, 128, 256, 512), "resnet50": (256, 512, 1024, 2048)}


class Encoder(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="sslzoo",
    tags=["sslzoo", "self-supervised-learning", "image-feature-extraction"],
    pipeline_tag="image-feature-extraction",
    license="mit",
):
    """A ResNet feature extractor: `forward(x)` maps (B, 3, H, W) normalised images to (B, D) features.

    Its parameters are named exactly like torchvision's ResNet (no prefix, no `fc`), so
    `model.safetensors` loads into `sslzoo.backbones.torchvision_resnet(backbone, stem)`.

    With `num_classes=N` (`sslzoo.load(name, num_classes=N)`) it carries a linear head, torchvision's
    `fc`, and `forward` returns (B, N) logits, as timm's `create_model(..., num_classes=N)` does;
    `config.json` then records `num_classes` and the head's weights are saved with the rest.
    `embed`, `pooled_features` and `feature_maps` give features with or without a head.

    `weights_sha256` is the checksum of the weights file `sslzoo.load` read them from
    (`sslzoo.weight_files.weights_sha256`): what an evaluation reports, so its numbers name the
    file they belong to. It is None for an encoder built in memory, and `load_state_dict` clears it.
    """

    weights_sha256: str | None = None

    def __init__(
        self,
        backbone: str = "resnet18",
        stem: str = "cifar",
        input_size: int = 32,
        mean: Sequence[float] = CIFAR10_MEAN,
        std: Sequence[float] = CIFAR10_STD,
        interpolation: str = "bilinear",
        provenance: dict[str, Any] | None = None,
        num_classes: int = 0,
    ):
        super().__init__()
        checked = check_config(
            {
                "backbone": backbone,
                "stem": stem,
                "input_size": input_size,
                "mean": mean,
                "std": std,
                "interpolation": interpolation,
                "provenance": provenance,
            }
        )
        self.backbone = backbone
        self.stem = stem
        self.input_size = checked["input_size"]
        self.mean = checked["mean"]
        self.std = checked["std"]
        self.interpolation = interpolation
        self.provenance: dict[str, Any] = dict(provenance or {})
        self.num_features = num_features(backbone)
        net = torchvision_resnet(backbone, stem)
        for name in RESNET_STAGES:  # torchvision's names at the top level: no "backbone." prefix
            self.add_module(name, getattr(net, name))
        self.num_classes = 0
        self.fc: nn.Module = nn.Identity()
        self.reset_classifier(num_classes)
        self._transform = eval_transform(self.input_size, self.mean, self.std, self.interpolation)

    @property
    def config(self) -> dict[str, Any]:
        """The constructor arguments: what `config.json` holds and what rebuilds this encoder.

        `num_classes` appears only with a head, so a headless encoder's config stays what every
        sslzoo version reads.
        """
        config = {
            "backbone": self.backbone,
            "stem": self.stem,
            "input_size": self.input_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            "provenance": self.provenance,
        }
        if self.num_classes:
            config["num_classes"] = self.num_classes
        return config

    @property
    def feature_info(self) -> list[dict[str, Any]]:
        """The stages `feature_maps` returns: name, channels and stride relative to the input (as timm's)."""
        first = 1 if self.stem == "cifar" else 4
        widths = STAGE_WIDTHS[self.backbone]
        return [
            {"module": name, "num_chs": width, "reduction": first * 2**index}
            for index, (name, width) in enumerate(zip(FEATURE_STAGES, widths))
        ]

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head with a freshly initialised `nn.Linear(num_features, num_classes)`
        (PyTorch's default initialisation); `num_classes=0` removes it."""
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ConfigError(f"num_classes must be a whole number >= 0 (got {num_classes!r}).")
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        self.weights_sha256 = None  # a fresh head: no longer the weights of the file it was loaded from

    def save_pretrained(
        self, save_directory: str | Path, *, max_shard_size: int | str | None = None, **kwargs: Any
    ) -> str | None:
        """`config.json` and the weights in `save_directory` (plus a README), as huggingface_hub writes them.

        `max_shard_size` ("15MB", "5GB", or bytes) splits the weights into safetensors shards of at
        most that size, with `model.safetensors.index.json`: the Hub's and `transformers`' layout,
        for hosts that limit file sizes. `sslzoo.load` reads either layout. `config.json` is the
        encoder's current `config` (its provenance as it is now, not as it was built). Other
        keywords are `PyTorchModelHubMixin.save_pretrained`'s.
        """
        kwargs.setdefault("config", self.config)
        self._max_shard_size = max_shard_size
        try:
            return super().save_pretrained(save_directory, **kwargs)
        finally:
            self._max_shard_size = None

    def _save_pretrained(self, save_directory: Path) -> None:
        if getattr(self, "_max_shard_size", None) is not None:
            weight_files.save_state_dict(self.state_dict(), save_directory, self._max_shard_size)
            return
        weight_files.remove_shards(save_directory)  # one layout per folder: an old index must not win
        super()._save_pretrained(save_directory)
        weight_files.with_default_permissions([Path(save_directory) / weight_files.WEIGHTS_NAME])

    @classmethod
    def _from_pretrained(cls, *, model_id: str, map_location: str = "cpu", strict: bool = False, **kwargs: Any):
        """`Encoder.from_pretrained(folder)` also reads a sharded folder (huggingface_hub's loader)."""
        if Path(model_id).is_dir() and weight_files.is_sharded(model_id):
            hub_keys = ("revision", "cache_dir", "force_download", "local_files_only", "token")
            model = cls(**{key: value for key, value in kwargs.items() if key not in hub_keys})
            load_torch_model(model, model_id, strict=strict, map_location=map_location)
            return model.eval()
        return super()._from_pretrained(model_id=model_id, map_location=map_location, strict=strict, **kwargs)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """`nn.Module.load_state_dict`; the weights no longer are those of the file it was loaded from."""
        self.weights_sha256 = None
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) pooled features, or (B, num_classes) logits when the encoder has a head."""
        return self.forward_head(self.forward_features(x))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's feature map, (B, D, H/r, W/r) before pooling (timm's `forward_features`)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool a `forward_features` map; then the head, unless `pre_logits` (or there is none)."""
        x = torch.flatten(self.avgpool(x), 1)
        return x if pre_logits else self.fc(x)

    def pooled_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) pooled features, with or without a head: what embedding, evaluation and ONNX use."""
        return self.forward_head(self.forward_features(x), pre_logits=True)

    def feature_maps(
        self, x: torch.Tensor, stages: Sequence[str] = ("layer1", "layer2", "layer3", "layer4")
    ) -> dict[str, torch.Tensor]:
        """The feature map after each of `stages`, for dense tasks (detection, segmentation).

        A CIFAR-stem ResNet-18 on 32 px input gives layer1 (B, 64, 32, 32) ... layer4 (B, 512, 4, 4);
        `feature_info` lists channels and strides.
        """
        unknown = [stage for stage in stages if stage not in FEATURE_STAGES]
        if unknown:
            raise ConfigError(f"Unknown stage(s) {unknown}; choose from {list(FEATURE_STAGES)}.")
        return self.forward_with_exits(x, stages)[1]

    def forward_with_exits(
        self, x: torch.Tensor, exits: Sequence[str] = ()
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Pooled (pre-logits) features plus the feature maps after the named stages (e.g. "layer2" for SelfCon)."""
        maps: dict[str, torch.Tensor] = {}
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name in ("layer1", "layer2", "layer3", "layer4"):
            x = getattr(self, name)(x)
            if name in exits:
                maps[name] = x
        return torch.flatten(self.avgpool(x), 1), maps

    def preprocess(self, images: ImageLike | Sequence[ImageLike]) -> torch.Tensor:
        """Images (PIL, paths, uint8 tensors) to the normalised (B, 3, S, S) float batch the model expects.

        Files and PIL images are made upright (EXIF orientation) and decoded no larger than the
        input size needs; see `sslzoo.preprocessing`.
        """
        return torch.stack([self._transform(image) for image in as_batch(images, self.input_size)])

    @torch.inference_mode()
    def embed(self, images: ImageLike | Sequence[ImageLike], batch_size: int = 256) -> torch.Tensor:
        """L2-normalised features of `images`, computed in eval mode on the encoder's device."""
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        batch = self.preprocess(images)
        features = [self.pooled_features(chunk.to(device)) for chunk in batch.split(batch_size)]
        self.train(was_training)
        return F.normalize(torch.cat(features).float(), dim=1)

    def extra_repr(self) -> str:
        method = self.provenance.get("method", "untrained")
        head = f", num_classes={self.num_classes}" if self.num_classes else ""
        return f"backbone={self.backbone}, stem={self.stem}, input_size={self.input_size}, method={method}{head}"
