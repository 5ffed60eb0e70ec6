"""Models by name. Every builder takes ``(num_classes, input_shape)`` and returns an ``nn.Module``.

Strong-ticket conventions: the classic nets have no biases, BatchNorm is built with ``affine=False``
(running statistics still update), and the pruner freezes every model parameter, so biases, norms and
embeddings stay at their initial values. Any timm model is available as ``timm:<name>`` (never with
pretrained weights). Register your own with `register_model`.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from functools import partial
from typing import Callable

import torch
from torch import nn

from benchmarks.errors import UserError

ModelFn = Callable[[int, tuple[int, ...]], nn.Module]
MODELS: dict[str, ModelFn] = {}
TRAIN_LR: dict[str, float] = {}  # weight-training learning rates of the models the standard recipe does not suit
FrozenBN = partial(nn.BatchNorm2d, affine=False)


def register_model(name: str, train_lr: float | None = None) -> Callable[[ModelFn], ModelFn]:
    """Decorator: ``@register_model("mynet")`` on ``fn(num_classes, input_shape) -> nn.Module``
    makes ``bench run --arch mynet`` work. `train_lr`: the SGD learning rate for training the model's
    weights (weak regime, dense, pre-training) where the standard recipe's does not suit it."""

    if name in MODELS:  # two networks under one name would share cell ids
        raise ValueError(f"arch {name!r} is already registered; give yours another name")

    def deco(fn: ModelFn) -> ModelFn:
        MODELS[name] = fn
        if train_lr is not None:
            TRAIN_LR[name] = train_lr
        return fn

    return deco


def build_model(name: str, num_classes: int, input_shape: tuple[int, ...], activation: str = "relu") -> nn.Module:
    if name.startswith("timm:"):
        model = _timm(name.removeprefix("timm:"), num_classes, input_shape)
    elif name not in MODELS:
        raise UserError(f"unknown arch {name!r}; available: {', '.join(sorted(MODELS))}, or timm:<name>")
    else:
        model = MODELS[name](num_classes, input_shape)
    return set_activation(model, activation, input_shape, name)


# The nonlinearity that replaces each nn.ReLU module (`--activation`). ReLU silently zeroes every unit whose
# pre-activation is negative on all inputs, which a structured search cannot tell from a gated-off unit; CRBG's
# thesis used a "PreReLU" to avoid that "unintentional sparsification". We read it as PReLU (He et al. 2015):
# one negative slope per channel, 0.25 at init (frozen there in the strong regime, trained where the weights
# are). One slope shared by a whole layer gathers a gradient a hundred times a weight's and sends SGD at lr 0.1
# to NaN in the first epoch (dense LeNet-300-100, MNIST). Also a fixed leaky ReLU (slope 0.01).
ACTIVATIONS = ("relu", "prelu", "leaky")


def set_activation(model: nn.Module, activation: str, input_shape: tuple[int, ...], arch: str = "the model") -> nn.Module:
    """Replace every ``nn.ReLU`` module of `model` with `activation` (one of `ACTIVATIONS`), in place. PReLU's
    channel count comes from one forward pass of a zero input of `input_shape`. A model without a ReLU module
    (a timm ViT), or one whose shared ReLU module serves layers of different widths (torchvision's Bottleneck),
    is an error, not a silent ReLU. (ReLU applied as a function cannot be seen: the registered models apply
    it as modules only.)"""
    if activation not in ACTIVATIONS:
        raise UserError(f"unknown activation {activation!r}; choose from {', '.join(ACTIVATIONS)}")
    if activation == "relu":
        return model
    targets = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
               if type(child) is nn.ReLU]
    if not targets:
        raise UserError(f"--activation {activation}: {arch} has no nn.ReLU module to replace (supported on "
                        f"lenet300, conv2..conv8, resnet20 and the torchvision ResNets)")
    widths: dict[int, set[int]] = {id(c): set() for _, _, c in targets}
    hooks = [c.register_forward_hook(lambda m, inp, out: widths[id(m)].add(inp[0].shape[1])) for _, _, c in targets]
    was_training = model.training
    with torch.no_grad():
        model.eval()(torch.zeros(1, *input_shape))
    model.train(was_training)
    for h in hooks:
        h.remove()
    for parent, name, child in targets:
        if len(widths[id(child)]) != 1:
            raise UserError(f"--activation {activation}: {arch} shares one ReLU module between layers of widths "
                            f"{sorted(widths[id(child)])}; use --activation leaky there")
        width = next(iter(widths[id(child)]))
        setattr(parent, name, nn.PReLU(width) if activation == "prelu" else nn.LeakyReLU())
    return model


def lenet300(num_classes: int, input_shape: tuple[int, ...], width: float = 1.0) -> nn.Module:
    """LeNet-300-100: fully connected 784-300-100-10, no biases (layers fc1, fc2, fc3); `width` scales both
    hidden layers (the CRBG thesis's base-network-size sweep: lenet300x0.25, x0.5, x2)."""
    h1, h2 = round(300 * width), round(100 * width)
    return nn.Sequential(OrderedDict([
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(math.prod(input_shape), h1, bias=False)), ("relu1", nn.ReLU()),
        ("fc2", nn.Linear(h1, h2, bias=False)), ("relu2", nn.ReLU()),
        ("fc3", nn.Linear(h2, num_classes, bias=False)),
    ]))


register_model("lenet300")(lenet300)
for _width in ("0.25", "0.5", "2"):
    register_model(f"lenet300x{_width}")(partial(lenet300, width=float(_width)))


CONV_WIDTHS = {2: (64,), 4: (64, 128), 6: (64, 128, 256), 8: (64, 128, 256, 512)}


def conv_net(depth: int, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """Conv-N of Frankle & Carbin / Edge-Popup: pairs of 3x3 convs then 2x2 max-pool, FC 256-256-classes,
    no biases, no BatchNorm (layers conv1..convN, fc1, fc2, fc3)."""
    layers: list[tuple[str, nn.Module]] = []
    c, h, w = input_shape
    for i, width in enumerate(CONV_WIDTHS[depth]):
        a, b = 2 * i + 1, 2 * i + 2
        layers += [(f"conv{a}", nn.Conv2d(c, width, 3, padding=1, bias=False)), (f"relu{a}", nn.ReLU()),
                   (f"conv{b}", nn.Conv2d(width, width, 3, padding=1, bias=False)), (f"relu{b}", nn.ReLU()),
                   (f"pool{i + 1}", nn.MaxPool2d(2))]
        c, h, w = width, h // 2, w // 2
    layers += [("flatten", nn.Flatten()), ("fc1", nn.Linear(c * h * w, 256, bias=False)), ("relu_fc1", nn.ReLU()),
               ("fc2", nn.Linear(256, 256, bias=False)), ("relu_fc2", nn.ReLU()),
               ("fc3", nn.Linear(256, num_classes, bias=False))]
    return nn.Sequential(OrderedDict(layers))


# Without normalisation, SGD at lr 0.1 sends Conv-N to chance (conv2, MNIST, one epoch: 9.8 % test
# accuracy, against 98.2 % at 0.01); Edge-Popup's own SGD baselines for these nets train at 0.01.
for _depth in CONV_WIDTHS:
    register_model(f"conv{_depth}", train_lr=0.01)(partial(conv_net, _depth))


def drop_bn_affine(model: nn.Module) -> nn.Module:
    """Turn every BatchNorm into affine=False (torchvision's ResNet init needs the affine parameters)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.affine = False
            m.register_parameter("weight", None)
            m.register_parameter("bias", None)
    return model


def _cifar_stem(model: nn.Module, in_channels: int) -> nn.Module:
    """torchvision ResNets adapted to 32x32 inputs: 3x3 stride-1 stem, no max-pool."""
    model.conv1 = nn.Conv2d(in_channels, model.conv1.out_channels, 3, 1, 1, bias=False)
    model.maxpool = nn.Identity()
    return model


def _torchvision_resnet(builder: str, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """torchvision ResNet with affine-free BatchNorm; 3x3 stem without max-pool for inputs up to 64 px."""
    import torchvision

    model = drop_bn_affine(getattr(torchvision.models, builder)(weights=None, num_classes=num_classes))
    return _cifar_stem(model, input_shape[0]) if input_shape[-1] <= 64 else model


register_model("resnet18")(partial(_torchvision_resnet, "resnet18"))
register_model("resnet50")(partial(_torchvision_resnet, "resnet50"))
register_model("wrn50")(partial(_torchvision_resnet, "wide_resnet50_2"))


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = FrozenBN(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = FrozenBN(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), FrozenBN(cout))
        self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()  # modules, so `--activation` can replace them

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        return self.relu2(self.bn2(self.conv2(out)) + self.shortcut(x))


@register_model("resnet20")
def resnet20(num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """CIFAR ResNet-20 (He et al. 2016): 3 stages of 3 basic blocks, widths 16/32/64, 1x1 projection shortcuts
    (layers conv1, stage1_block1.conv1 ... stage3_block3.shortcut.0, fc)."""
    layers: list[tuple[str, nn.Module]] = [("conv1", nn.Conv2d(input_shape[0], 16, 3, 1, 1, bias=False)),
                                           ("bn1", FrozenBN(16)), ("relu", nn.ReLU())]
    cin = 16
    for stage, width in enumerate((16, 32, 64)):
        for block in range(3):
            layers.append((f"stage{stage + 1}_block{block + 1}",
                           _BasicBlock(cin, width, 2 if stage > 0 and block == 0 else 1)))
            cin = width
    layers += [("pool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()), ("fc", nn.Linear(64, num_classes, bias=False))]
    return nn.Sequential(OrderedDict(layers))


def _timm(name: str, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    import timm

    if name not in timm.list_models():
        raise UserError(f"unknown timm model {name!r} (see timm.list_models())")
    kwargs = dict(pretrained=False, num_classes=num_classes, in_chans=input_shape[0])
    try:
        return timm.create_model(name, img_size=input_shape[1:], **kwargs)
    except TypeError:  # models without an img_size argument (convnets) take any size
        return timm.create_model(name, **kwargs)
