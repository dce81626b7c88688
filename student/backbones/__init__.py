"""Student encoders, one module per backbone, and the registry that `build_student(backbone=...)` reads.

Each backbone module provides ``build_encoder(input_shape, name, seed)`` (a functional model on the normalised
image whose output is a dict of taps ``{"P2", "P3", "P4", "P5"}`` at strides 4, 8, 16 and 32), the layer that
normalises RGB 0..255 for it (``Normalization``), its tap widths (``TAP_CHANNELS``), and
``load_weights(encoder, path_or_imagenet)`` for its pretrained weights.
"""

from __future__ import annotations

import dataclasses
import importlib

DEFAULT_BACKBONE = "resnet18"


@dataclasses.dataclass(frozen=True)
class BackboneInfo:
    """What the registry knows of a backbone without importing Keras: its module and tap widths."""

    name: str
    module: str
    tap_channels: tuple[int, int, int, int]
    options: tuple = ()  # keyword arguments of the module's build_encoder and load_weights, as (key, value) pairs

    @property
    def layer_name(self):
        """The nested encoder's layer name in a student (``resnet18``, ``efficientnet_lite0``, ...)."""
        return self.name.replace("-", "_")

    def load(self):
        """The backbone's module (imports Keras)."""
        return importlib.import_module(self.module)


BACKBONES = {
    "resnet18": BackboneInfo("resnet18", "student.backbones.resnet18", (64, 128, 256, 512)),
    "efficientnet-lite0": BackboneInfo("efficientnet-lite0", "student.backbones.efficientnet_lite", (24, 40, 112, 320),
                                       (("variant", "efficientnet-lite0"),)),
    "efficientnet-lite1": BackboneInfo("efficientnet-lite1", "student.backbones.efficientnet_lite", (24, 40, 112, 320),
                                       (("variant", "efficientnet-lite1"),)),
    "efficientnet-lite2": BackboneInfo("efficientnet-lite2", "student.backbones.efficientnet_lite", (24, 48, 120, 352),
                                       (("variant", "efficientnet-lite2"),)),
    "mobilenetv2": BackboneInfo("mobilenetv2", "student.backbones.mobilenetv2", (24, 32, 96, 320)),
}


def get_backbone(name: str) -> BackboneInfo:
    """The registry entry of `name`; a ValueError lists the valid names otherwise."""
    try:
        return BACKBONES[str(name).lower()]
    except KeyError:
        raise ValueError(f"Unknown backbone {name!r}; choose one of: {', '.join(BACKBONES)}") from None
