"""Plain-PyTorch reference networks with the official AdaFocus state-dict names (tests only).

Written from the project's own specification (`shared/reference/adafocus_v1.md` §2, §3, §10), not
from the official repositories. Every module below produces a `state_dict()` whose key names and
shapes are those of the released checkpoints (§10.2, §10.3), so the tests can build a reference with
random weights, save it in an official file layout, convert it with `adafocus_jax.convert` and compare
the Flax networks' outputs with these modules' outputs.

All image tensors here are NCHW (PyTorch); frames of a video are video-major on the batch axis
(row = n * T + t). Every network takes width / depth knobs so most tests can run tiny versions;
the defaults are the official full-size networks.

torchvision is not usable on this machine, so MobileNetV2 and ResNet are written out here.
"""

import math
from typing import Sequence

import torch
from torch import nn
import torch.nn.functional as F

# MobileNetV2 blocks (1-based `features.i`) that the TSM glancer wraps with a temporal shift: the
# ones with an expansion layer AND a residual connection (§2.2).
SHIFTED_MOBILENET_BLOCKS = (3, 5, 6, 8, 9, 10, 12, 13, 15, 16)

# (expansion t, output channels c, repeats n, first stride s) of the 17 inverted-residual blocks.
_MOBILENET_V2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                          (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


# --------------------------------------------------------------------------------------------------
# Temporal shift
# --------------------------------------------------------------------------------------------------

def temporal_shift(x: torch.Tensor, num_segments: int, fold_div: int = 8) -> torch.Tensor:
    """TSM shift of `[N*T, C, H, W]`: channels [0, C/8) from frame t+1, [C/8, 2C/8) from t-1.

    Frames outside the clip read as zeros; the remaining channels pass through (§2.1).
    """
    nt, c, h, w = x.shape
    v = x.view(nt // num_segments, num_segments, c, h, w)
    fold = c // fold_div
    out = torch.zeros_like(v)
    out[:, :-1, :fold] = v[:, 1:, :fold]
    out[:, 1:, fold:2 * fold] = v[:, :-1, fold:2 * fold]
    out[:, :, 2 * fold:] = v[:, :, 2 * fold:]
    return out.view(nt, c, h, w)


class TemporalShift(nn.Module):
    """Wraps a layer so it sees a temporally shifted input; its parameters gain a `.net.` segment."""

    def __init__(self, net: nn.Module, num_segments: int, fold_div: int = 8):
        super().__init__()
        self.net = net
        self.num_segments = num_segments
        self.fold_div = fold_div

    def forward(self, x):
        return self.net(temporal_shift(x, self.num_segments, self.fold_div))


# --------------------------------------------------------------------------------------------------
# MobileNetV2 (glance network)
# --------------------------------------------------------------------------------------------------

def make_divisible(value: float, divisor: int = 8) -> int:
    """Nearest multiple of `divisor`, at least `divisor`, never more than 10% below `value`."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def mobilenet_v2_blocks(width_mult: float = 1.0):
    """(in, out, hidden, stride, residual) for blocks 1..17, channels scaled by `width_mult`.

    Both layouts use torchvision's rounding here. The tonylins/TSM code rounds differently when
    width_mult != 1 (ceil, an unscaled 32-channel stem and 16-channel block 1), but every official
    network has width 1.0, where the two agree; other widths only serve the tiny test models, which
    the Flax network builds with the same rule.
    """
    blocks = []
    in_ch = make_divisible(32 * width_mult)
    for t, c, n, s in _MOBILENET_V2_SETTINGS:
        out_ch = make_divisible(c * width_mult)
        for i in range(n):
            stride = s if i == 0 else 1
            blocks.append((in_ch, out_ch, in_ch * t, stride, stride == 1 and in_ch == out_ch))
            in_ch = out_ch
    return blocks


def _conv(in_ch, out_ch, kernel, stride=1, groups=1):
    return nn.Conv2d(in_ch, out_ch, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False)


def _conv_bn_relu6(in_ch, out_ch, kernel, stride=1, groups=1):
    """conv → BN → ReLU6 as a 3-entry Sequential (keys `0.weight`, `1.*`)."""
    return nn.Sequential(_conv(in_ch, out_ch, kernel, stride, groups), nn.BatchNorm2d(out_ch),
                         nn.ReLU6(inplace=False))


class TsmInvertedResidual(nn.Module):
    """Inverted residual in the TSM ("tonylins") layout: one flat `conv` Sequential.

    t = 1: [dw, BN, ReLU6, pw, BN] (indices 0..4); t > 1: [pw, BN, ReLU6, dw, BN, ReLU6, pw, BN]
    (0..7). With `num_segments`, conv[0] of an expanding residual block is wrapped in a shift.
    """

    def __init__(self, in_ch, out_ch, hidden, stride, residual, num_segments=None):
        super().__init__()
        self.residual = residual
        if hidden == in_ch:
            layers = [_conv(hidden, hidden, 3, stride, hidden), nn.BatchNorm2d(hidden),
                      nn.ReLU6(), _conv(hidden, out_ch, 1), nn.BatchNorm2d(out_ch)]
        else:
            layers = [_conv(in_ch, hidden, 1), nn.BatchNorm2d(hidden), nn.ReLU6(),
                      _conv(hidden, hidden, 3, stride, hidden), nn.BatchNorm2d(hidden), nn.ReLU6(),
                      _conv(hidden, out_ch, 1), nn.BatchNorm2d(out_ch)]
            if num_segments is not None and residual:
                layers[0] = TemporalShift(layers[0], num_segments)
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


class TorchvisionInvertedResidual(nn.Module):
    """Inverted residual in the torchvision layout (ConvBNReLU sub-Sequentials, no shift).

    t = 1: [ConvBNReLU(dw), pw, BN]; t > 1: [ConvBNReLU(pw), ConvBNReLU(dw), pw, BN].
    """

    def __init__(self, in_ch, out_ch, hidden, stride, residual):
        super().__init__()
        self.residual = residual
        layers = []
        if hidden != in_ch:
            layers.append(_conv_bn_relu6(in_ch, hidden, 1))
        layers += [_conv_bn_relu6(hidden, hidden, 3, stride, hidden), _conv(hidden, out_ch, 1),
                   nn.BatchNorm2d(out_ch)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 in either official layout.

    Args:
      layout: "tsm" (Sth-Sth glancer: `classifier` is a Linear, shift when `num_segments` is set)
        or "torchvision" (ActivityNet glancer: `classifier` = Sequential(Dropout(0.2), Linear)).
      num_classes: head size, or None for no head (TSN replaces the head by `new_fc`).
      width_mult: channel multiplier; last_channel: channels of features.18 (default: 1280 rule).
      num_segments: frames per video for the TSM shift (tsm layout only), or None.
    """

    def __init__(self, layout="tsm", num_classes=174, width_mult=1.0, last_channel=None,
                 num_segments=None):
        super().__init__()
        if layout not in ("tsm", "torchvision"):
            raise ValueError(f"unknown MobileNetV2 layout {layout!r}")
        if layout == "torchvision" and num_segments is not None:
            raise ValueError("the torchvision-layout MobileNetV2 has no temporal shift")
        self.layout = layout
        self.last_channel = last_channel or make_divisible(1280 * max(1.0, width_mult))
        stem_ch = make_divisible(32 * width_mult)
        features = [_conv_bn_relu6(3, stem_ch, 3, 2)]  # the same in both layouts
        in_ch = stem_ch
        for in_ch, out_ch, hidden, stride, residual in mobilenet_v2_blocks(width_mult):
            if layout == "tsm":
                features.append(TsmInvertedResidual(in_ch, out_ch, hidden, stride, residual,
                                                    num_segments))
            else:
                features.append(TorchvisionInvertedResidual(in_ch, out_ch, hidden, stride,
                                                            residual))
            in_ch = out_ch
        features.append(_conv_bn_relu6(in_ch, self.last_channel, 1))
        self.features = nn.Sequential(*features)
        if num_classes is not None:
            if layout == "tsm":
                self.classifier = nn.Linear(self.last_channel, num_classes)
            else:
                self.classifier = nn.Sequential(nn.Dropout(0.2),
                                                nn.Linear(self.last_channel, num_classes))

    def get_featmap(self, x):
        """`[N, 3, H, W]` → (map `[N, last_channel, H/32, W/32]`, logits (tsm) or pooled (torchvision)).

        The TSM glancer returns logits of the spatially pooled map (§2.2); the torchvision one the
        pooled feature itself (§2.3).
        """
        feature_map = self.features(x)
        pooled = feature_map.mean(dim=(2, 3))
        if self.layout == "tsm":
            return feature_map, self.classifier(pooled)
        return feature_map, pooled

    def forward(self, x):
        """`[N, 3, H, W]` → logits `[N, num_classes]` (with the torchvision dropout in train mode)."""
        return self.classifier(self.features(x).mean(dim=(2, 3)))


# --------------------------------------------------------------------------------------------------
# ResNet-50 (local network)
# --------------------------------------------------------------------------------------------------

class Bottleneck(nn.Module):
    """torchvision v1.5 bottleneck; with `num_segments`, conv1 is wrapped in a shift (blockres)."""

    def __init__(self, in_ch, width, stride=1, downsample=None, num_segments=None):
        super().__init__()
        conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.conv1 = conv1 if num_segments is None else TemporalShift(conv1, num_segments)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width * 4)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(y + shortcut)


class ResNet(nn.Module):
    """torchvision-layout ResNet (children in torchvision's order, so a Sequential truncation
    renumbers them exactly as the official Sth-Sth focuser does).

    Args:
      num_classes: `fc` size; None replaces fc by a parameterless Dropout, as TSN does.
      width: stem / first-stage width (64); stage_sizes: bottlenecks per stage ((3, 4, 6, 3)).
      num_segments: frames per video for TSM blockres, or None.
    """

    def __init__(self, num_classes=1000, width=64, stage_sizes: Sequence[int] = (3, 4, 6, 3),
                 num_segments=None):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        in_ch = width
        for stage, num_blocks in enumerate(stage_sizes):
            stage_width = width * 2 ** stage
            stride = 1 if stage == 0 else 2
            blocks = []
            for block in range(num_blocks):
                downsample = None
                if block == 0:
                    downsample = nn.Sequential(
                        nn.Conv2d(in_ch, stage_width * 4, 1, stride, bias=False),
                        nn.BatchNorm2d(stage_width * 4))
                blocks.append(Bottleneck(in_ch, stage_width, stride if block == 0 else 1,
                                         downsample, num_segments))
                in_ch = stage_width * 4
            setattr(self, f"layer{stage + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.num_features = in_ch
        self.fc = nn.Dropout(0.5) if num_classes is None else nn.Linear(in_ch, num_classes)

    def get_featmap(self, x):
        """`[N, 3, P, P]` → pooled features `[N, 4 * 8 * width, 1, 1]` (the avgpool output)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.avgpool(x)

    def forward(self, x):
        return self.fc(torch.flatten(self.get_featmap(x), 1))


class TSN(nn.Module):
    """The TSM repo's TSN wrapper as far as names go: `base_model` (+ `new_fc` when it has one)."""

    def __init__(self, base_model: nn.Module, new_fc: nn.Module | None = None):
        super().__init__()
        self.base_model = base_model
        if new_fc is not None:
            self.new_fc = new_fc

    def forward(self, x):
        """`[N, 3, P, P]` → features `[N, F]` (the base model ends with avgpool after truncation)."""
        return torch.flatten(self.base_model(x), 1)


class DataParallelNames(nn.Module):
    """Gives a module the `module.` prefix that `nn.DataParallel` adds to a saved state dict."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module


def truncate_resnet(tsn: TSN) -> TSN:
    """Replaces `base_model` by Sequential(children[:-1]) (drops fc), as every Sth-Sth script does;
    this renumbers conv1/bn1/layer1..4 as `0`, `1`, `4`..`7`."""
    tsn.base_model = nn.Sequential(*list(tsn.base_model.children())[:-1])
    return tsn


# --------------------------------------------------------------------------------------------------
# Wrappers named like the official glancer / focuser (checkpoint keys start with `net.`)
# --------------------------------------------------------------------------------------------------

class Glancer(nn.Module):
    """`net` = a MobileNetV2; the `glancer` checkpoint entry is this module's state dict."""

    def __init__(self, mobilenet: MobileNetV2):
        super().__init__()
        self.net = mobilenet

    def get_featmap(self, x):
        return self.net.get_featmap(x)


class SthSthFocuser(nn.Module):
    """`net` = TSN around a TSM ResNet, already truncated (keys `net.base_model.{0,1,4..7}...`)."""

    def __init__(self, width=64, stage_sizes=(3, 4, 6, 3), num_segments=12):
        super().__init__()
        resnet = ResNet(None, width, stage_sizes, num_segments)
        self.num_features = resnet.num_features
        self.net = truncate_resnet(TSN(resnet))

    def forward(self, patches):
        """`[N*12, 3, P, P]` → `[N*12, F]`."""
        return self.net(patches)


class ANetFocuser(nn.Module):
    """`net` = a plain torchvision ResNet with `fc` (keys `net.conv1.weight`, ..., `net.fc.*`)."""

    def __init__(self, num_classes=200, width=64, stage_sizes=(3, 4, 6, 3)):
        super().__init__()
        self.net = ResNet(num_classes, width, stage_sizes)
        self.num_features = self.net.num_features

    def forward(self, patches):
        """`[N, 3, P, P]` → pooled features `[N, F]`."""
        return torch.flatten(self.net.get_featmap(patches), 1)


# --------------------------------------------------------------------------------------------------
# Policies (§2.6)
# --------------------------------------------------------------------------------------------------

class ContinuousActorCritic(nn.Module):
    """Sth-Sth policy: Gaussian mean in [0, 1]^2 (sigmoid), conv+BN encoder (`with_bn=True`).

    Args:
      feature_dim: channels of the state (8 frames × 1280 = 10240).
      map_size: spatial side of the state (7 for 224² input).
      encoder_channels: 1x1 conv output channels (64); hidden_dim: encoder / GRU width (1024).
    """

    def __init__(self, feature_dim=10240, map_size=7, encoder_channels=64, hidden_dim=1024,
                 with_bn=True):
        super().__init__()
        layers = [nn.Conv2d(feature_dim, encoder_channels, 1, bias=False)]
        if with_bn:
            layers.append(nn.BatchNorm2d(encoder_channels))
        layers += [nn.ReLU(), nn.Flatten(),
                   nn.Linear(encoder_channels * map_size * map_size, hidden_dim)]
        if with_bn:
            layers.append(nn.BatchNorm1d(hidden_dim))
        layers.append(nn.ReLU())
        self.state_encoder = nn.Sequential(*layers)
        self.gru = nn.GRU(hidden_dim, hidden_dim)
        self.actor = nn.Sequential(nn.Linear(hidden_dim, 2), nn.Sigmoid())
        self.critic = nn.Sequential(nn.Linear(hidden_dim, 1))
        self.hidden_dim = hidden_dim

    def step(self, state, hidden=None):
        """One acting step. state `[B, feature_dim, m, m]`, hidden `[1, B, H]` (zeros if None).

        Returns (actor output `[B, 2]` = the deterministic action, value `[B]`, new hidden).
        """
        encoded = self.state_encoder(state)
        if hidden is None:
            hidden = torch.zeros(1, encoded.shape[0], self.hidden_dim)
        out, hidden = self.gru(encoded.unsqueeze(0), hidden)
        out = out[0]
        return self.actor(out), self.critic(out)[:, 0], hidden


class DiscreteActorCritic(nn.Module):
    """ActivityNet policy: categorical over a k×k grid, conv encoder without BN."""

    def __init__(self, feature_dim=1280, map_size=7, encoder_channels=32, hidden_dim=1024,
                 num_actions=49):
        super().__init__()
        self.state_encoder = nn.Sequential(
            nn.Conv2d(feature_dim, encoder_channels, 1, bias=False), nn.ReLU(), nn.Flatten(),
            nn.Linear(encoder_channels * map_size * map_size, hidden_dim), nn.ReLU())
        self.gru = nn.GRU(hidden_dim, hidden_dim)
        self.actor = nn.Sequential(nn.Linear(hidden_dim, num_actions), nn.Softmax(dim=-1))
        self.critic = nn.Sequential(nn.Linear(hidden_dim, 1))
        self.hidden_dim = hidden_dim

    def step(self, state, hidden=None):
        """Returns (probabilities `[B, A]`, value `[B]`, new hidden `[1, B, H]`)."""
        encoded = self.state_encoder(state)
        if hidden is None:
            hidden = torch.zeros(1, encoded.shape[0], self.hidden_dim)
        out, hidden = self.gru(encoded.unsqueeze(0), hidden)
        out = out[0]
        return self.actor(out), self.critic(out)[:, 0], hidden


def action_grid(num_actions: int) -> torch.Tensor:
    """`[A, 2]` float32 (row, col) fractions of the k×k grid, row-major (§2.7)."""
    k = math.isqrt(num_actions)
    if k * k != num_actions or k < 2:
        raise ValueError(f"num_actions={num_actions} is not a square ≥ 4")
    values = [[i / (k - 1), j / (k - 1)] for i in range(k) for j in range(k)]
    return torch.tensor(values, dtype=torch.float32)


# --------------------------------------------------------------------------------------------------
# Classifiers (§2.8)
# --------------------------------------------------------------------------------------------------

class RecurrentClassifier(nn.Module):
    """ANet GRU classifier over [global ‖ local] features; every step is classified."""

    def __init__(self, input_dim=3328, hidden_dim=1024, num_classes=200, dropout=0.8):
        super().__init__()
        self.gru = nn.GRU(input_dim, hidden_dim, batch_first=True)
        self.fc = nn.Linear(hidden_dim, num_classes)
        self.dropout = nn.Dropout(dropout)

    def forward(self, features):
        """`[B, T, D]` → (step logits `[B, T, C]`, last-step logits `[B, C]`)."""
        out, _ = self.gru(features)
        logits = self.fc(self.dropout(out))
        return logits, logits[:, -1]


# --------------------------------------------------------------------------------------------------
# Crop (§2.7)
# --------------------------------------------------------------------------------------------------

def patch_offsets(action: torch.Tensor, image_size: int, patch_size: int) -> torch.Tensor:
    """`[B, 2]` actions in [0, 1] → int64 top-left (row, col): floor(float32(a) · float32(H − P))."""
    scaled = action.float() * torch.tensor(float(image_size - patch_size), dtype=torch.float32)
    return torch.floor(scaled).long()


def get_patch(images: torch.Tensor, action: torch.Tensor, patch_size: int):
    """Crops one P×P patch per row: images `[B, C, H, W]`, action `[B, 2]` (row, col fractions).

    Returns (patches `[B, C, P, P]`, offsets `[B, 2]`). One loop iteration per row, as plainly as
    possible: this is the reference, not the fast path.
    """
    offsets = patch_offsets(action, images.shape[2], patch_size)
    patches = [images[b, :, r:r + patch_size, c:c + patch_size]
               for b, (r, c) in enumerate(offsets.tolist())]
    return torch.stack(patches), offsets


def v2_grid_patches(images: torch.Tensor, top_left: torch.Tensor, patch_size: int,
                    box_size=None) -> torch.Tensor:
    """AdaFocusV2 crop (adafocus_family.md §1.2): one box per row, resampled with `affine_grid` +
    `grid_sample` (bilinear, zero padding, align_corners=False).

    images `[N, C, H, W]`; top_left `[N, 2]` float (row, col) in pixels; box_size: side in pixels
    (float or `[N]`, default P; or `[N, 2]` row and column sides, the Uni-AdaFocus boxes). The affine
    matrix maps the output grid onto the box: scale side/H (side/W) and translation
    −1 + (2·top + side)/H, i.e. −1 + (x1 + x2)/H with x2 = x1 + side. Returns `[N, C, P, P]`.
    """
    n, c, h, w = images.shape
    side = torch.full((n,), float(patch_size), dtype=images.dtype) if box_size is None else \
        torch.as_tensor(box_size, dtype=images.dtype)
    side_y, side_x = (side[:, 0], side[:, 1]) if side.ndim == 2 else (side.expand(n),) * 2
    y1, x1 = top_left[:, 0].to(images.dtype), top_left[:, 1].to(images.dtype)
    theta = torch.zeros(n, 2, 3, dtype=images.dtype)
    theta[:, 0, 0] = side_x / w
    theta[:, 1, 1] = side_y / h
    theta[:, 0, 2] = -1 + (x1 + x1 + side_x) / w
    theta[:, 1, 2] = -1 + (y1 + y1 + side_y) / h
    grid = F.affine_grid(theta, [n, c, patch_size, patch_size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def uni_box(actions: torch.Tensor, image_size: int, out_size: int, patch_size: int,
            side_range=(96.0, 224.0)):
    """Uni-AdaFocus box (adafocus_family.md §1.4), from the official structure: actions `[N, 4]`
    (y, x, s_y, s_x) in [0, 1]; per axis the scale is s·(hi − lo)/P + lo/P, the box side
    out_size·scale on an image of side `image_size` (the frames, or the 7×7 glance map with
    out_size = P // 32), the top-left a·(image_size − side). Returns (top_left, side) `[N, 2]`."""
    lo, hi = side_range
    side = out_size * (actions[:, 2:] * (hi - lo) / patch_size + lo / patch_size)
    return actions[:, :2] * (image_size - side), side


def uni_grid_patches(images: torch.Tensor, actions: torch.Tensor, out_size: int, patch_size: int,
                     side_range=(96.0, 224.0)) -> torch.Tensor:
    """Uni-AdaFocus crop: `uni_box` on the square images `[N, C, H, H]`, resampled with
    `v2_grid_patches`. Returns `[N, C, out_size, out_size]`."""
    top_left, side = uni_box(actions.to(images.dtype), images.shape[2], out_size, patch_size,
                             side_range)
    return v2_grid_patches(images, top_left, out_size, side)


# --------------------------------------------------------------------------------------------------
# The official inference compositions (§3.1, §3.2)
# --------------------------------------------------------------------------------------------------

class SthSthAdaFocus(nn.Module):
    """Sth-Sth inference (evaluate.py): one location per video from the Gaussian mean.

    glancer: Glancer(TSM MobileNetV2, num_segments = glance_segments); focuser: SthSthFocuser;
    fc: Linear(F, C); policy: ContinuousActorCritic over glance_segments × last_channel channels.
    """

    def __init__(self, glancer: Glancer, focuser: SthSthFocuser, fc: nn.Linear,
                 policy: ContinuousActorCritic, patch_size: int, glance_segments=8,
                 focus_segments=12):
        super().__init__()
        self.glancer, self.focuser, self.fc, self.policy = glancer, focuser, fc, policy
        self.patch_size = patch_size
        self.glance_segments, self.focus_segments = glance_segments, focus_segments

    @torch.no_grad()
    def forward(self, glance_frames, focus_frames):
        """glance `[B, T_G, 3, H, W]`, focus `[B, T_L, 3, H, W]` → dict with `logits` `[B, C]`,
        `patch_offsets` `[B, 1, 2]`, `action` `[B, 2]`, `glance_logits`, `local_logits`."""
        b, t_g = glance_frames.shape[:2]
        t_l = focus_frames.shape[1]
        feature_map, glance_logits = self.glancer.get_featmap(glance_frames.flatten(0, 1))
        # The state stacks the T_G maps on channels, frame-major (channel = t * C + c).
        state = feature_map.reshape(b, t_g * feature_map.shape[1], *feature_map.shape[2:])
        action, _, _ = self.policy.step(state)
        images = focus_frames.flatten(1, 2)  # [B, 3*T_L, H, W]: all frames share one location
        patches, offsets = get_patch(images, action, self.patch_size)
        patches = patches.reshape(b * t_l, 3, self.patch_size, self.patch_size)
        local_logits = self.fc(self.focuser(patches)).reshape(b, t_l, -1)
        glance_logits = glance_logits.reshape(b, t_g, -1)
        logits = local_logits.mean(1) + glance_logits.mean(1)
        return {"logits": logits, "patch_offsets": offsets[:, None], "action": action,
                "glance_logits": glance_logits, "local_logits": local_logits}


class ANetAdaFocus(nn.Module):
    """ActivityNet inference (main_dist.py evaluate): argmax grid policy, one crop per frame."""

    def __init__(self, glancer: Glancer, focuser: ANetFocuser, fc: RecurrentClassifier,
                 policy: DiscreteActorCritic, patch_size: int):
        super().__init__()
        self.glancer, self.focuser, self.fc, self.policy = glancer, focuser, fc, policy
        self.patch_size = patch_size

    @torch.no_grad()
    def forward(self, frames):
        """frames `[B, T, 3, H, W]` → dict with `logits` `[B, C]` (last step), `step_logits`
        `[B, T, C]`, `patch_offsets` `[B, T, 2]`, `probs` `[B, T, A]`."""
        b, t = frames.shape[:2]
        feature_map, pooled = self.glancer.get_featmap(frames.flatten(0, 1))
        feature_map = feature_map.reshape(b, t, *feature_map.shape[1:])
        pooled = pooled.reshape(b, t, -1)
        grid = action_grid(self.policy.actor[0].out_features)
        hidden = None  # reset at t = 0
        local, offsets, probs = [], [], []
        for step in range(t):
            step_probs, _, hidden = self.policy.step(feature_map[:, step], hidden)
            action = grid[torch.argmax(step_probs, dim=1)]
            patches, step_offsets = get_patch(frames[:, step], action, self.patch_size)
            local.append(self.focuser(patches))
            offsets.append(step_offsets)
            probs.append(step_probs)
        features = torch.cat([pooled, torch.stack(local, 1)], dim=2)  # global first
        step_logits, logits = self.fc(features)
        return {"logits": logits, "step_logits": step_logits,
                "patch_offsets": torch.stack(offsets, 1), "probs": torch.stack(probs, 1)}


# --------------------------------------------------------------------------------------------------
# Random weights and the official file layouts (§10.1)
# --------------------------------------------------------------------------------------------------

_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@torch.no_grad()
def randomize_batch_norm(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """Gives every BatchNorm non-trivial affine parameters and running statistics, so a converter
    that mixes up scale / bias / mean / var, or drops one, changes the output."""
    for m in module.modules():
        if isinstance(m, _BATCH_NORMS):
            n = m.num_features
            m.weight.copy_(torch.rand(n, generator=generator) * 0.8 + 0.6)
            m.bias.copy_(torch.randn(n, generator=generator) * 0.1)
            m.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=generator) * 0.8 + 0.6)
            m.num_batches_tracked.fill_(int(torch.randint(1, 1000, (1,), generator=generator)))
    return module


@torch.no_grad()
def calibrate_batch_norm(model: nn.Module, inputs: Sequence[torch.Tensor],
                         generator: torch.Generator) -> nn.Module:
    """Sets every BatchNorm's running statistics to the statistics of `model(*inputs)` in train
    mode, then perturbs them and the affine parameters randomly; leaves the model in eval mode.

    With PyTorch's default initialisation and unit running variances, the activations of a deep
    random network shrink until every input gives almost the same output (and the same patch).
    Calibrated statistics keep activations at unit scale, so the parity tests compare outputs that
    really depend on the input and patch choices that differ between videos and frames.
    """
    norms = [m for m in model.modules() if isinstance(m, _BATCH_NORMS)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: exactly this batch's statistics
    model.train()
    model(*inputs)
    model.eval()
    for m in norms:
        m.momentum = 0.1
        n = m.num_features
        m.weight.copy_(torch.rand(n, generator=generator) * 0.8 + 0.6)
        m.bias.copy_(torch.randn(n, generator=generator) * 0.2)
        std = m.running_var.sqrt()
        m.running_mean.add_(torch.randn(n, generator=generator) * 0.1 * std)
        m.running_var.mul_(torch.rand(n, generator=generator) * 0.6 + 0.7)
        m.num_batches_tracked.fill_(int(torch.randint(1, 1000, (1,), generator=generator)))
    return model


def tsm_pretrained_file(backbone: nn.Module, new_fc: nn.Linear, arch: str) -> dict:
    """A TSM `main.py` checkpoint: `module.base_model.*` (no head) + `module.new_fc.*` (§10.1).

    backbone: MobileNetV2 built with num_classes=None, or ResNet built with num_classes=None
    (TSN turns the base head into a parameterless Dropout), before any truncation.
    """
    wrapped = DataParallelNames(TSN(backbone, new_fc))
    return {"epoch": 50, "arch": arch, "state_dict": wrapped.state_dict(),
            "optimizer": _optimizer_state(wrapped), "best_prec1": torch.tensor(59.1)}


def _optimizer_state(module: nn.Module) -> dict:
    """A real (small) SGD state dict, so files carry the nested containers the released ones do."""
    params = [p for p in module.parameters()][:2]
    return torch.optim.SGD(params, lr=0.01, momentum=0.9).state_dict()


def sthsth_file(model: SthSthAdaFocus, stage: int) -> dict:
    """An AdaFocus Sth-Sth checkpoint of `stage` (1, 2, 3; 3 is also the `144x144` layout)."""
    model_state = {}
    for prefix, part in (("glancer", model.glancer), ("focuser", model.focuser),
                         ("classifier", model.fc)):
        model_state.update({f"{prefix}.{k}": v for k, v in part.state_dict().items()})
    out = {"epoch": 10, "model_state_dict": model_state, "glancer": model.glancer.state_dict(),
           "focuser": model.focuser.state_dict(), "fc": model.fc.state_dict(),
           "acc": torch.tensor(47.0), "best_acc": torch.tensor(47.0)}
    if stage >= 2:
        out["policy"] = model.policy.state_dict()
    if stage != 2:
        out["optimizer"] = _optimizer_state(model.fc)
    return out


def anet_file(model: ANetAdaFocus, with_policy: bool) -> dict:
    """An ActivityNet main_dist.py checkpoint (stage 0/1 without a policy, stage 3 with one).

    With a policy, the focuser's state dict also carries `policy.policy.*` and `policy.policy_old.*`
    (the PPO module hangs off the focuser), and `model_state_dict` carries them under `focuser.`.
    """
    focuser_state = dict(model.focuser.state_dict())
    if with_policy:
        for name in ("policy", "policy_old"):
            focuser_state.update({f"policy.{name}.{k}": v
                                  for k, v in model.policy.state_dict().items()})
    model_state = {f"glancer.{k}": v for k, v in model.glancer.state_dict().items()}
    model_state.update({f"focuser.{k}": v for k, v in focuser_state.items()})
    model_state.update({f"classifier.{k}": v for k, v in model.fc.state_dict().items()})
    return {"epoch": 10, "model_state_dict": model_state, "glancer": model.glancer.state_dict(),
            "focuser": focuser_state, "fc": model.fc.state_dict(), "scaler": None,
            "policy": model.policy.state_dict() if with_policy else None,
            "acc": torch.tensor(75.0), "best_acc": torch.tensor(75.0),
            "optimizer": _optimizer_state(model.fc)}


# --------------------------------------------------------------------------------------------------
# Builders from a Flax model config (`adafocus_jax.models.default_model_config` / `tiny_model_config`)
# --------------------------------------------------------------------------------------------------

def _map_size(model_config) -> int:
    return -(-model_config.glance_size // 32)  # ceil: stride-2 convs with symmetric padding


def random_frames(batch: int, frames: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Normalised-looking random frames `[B, T, 3, S, S]` with spatial structure (smooth blobs plus
    noise), so different patch locations see different content."""
    coarse = torch.randn(batch * frames, 3, max(size // 8, 2), max(size // 8, 2),
                         generator=generator)
    smooth = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    noise = 0.3 * torch.randn(batch * frames, 3, size, size, generator=generator)
    return (smooth + noise).reshape(batch, frames, 3, size, size)


@torch.no_grad()
def _spread_actor(policy: nn.Module, gain: float = 6.0) -> None:
    """Scales the actor's weights (and zeroes its bias) so that, with random weights, the patch
    choice depends strongly on the state and differs between videos / frames instead of sitting
    on one cell; the official initialisation is PyTorch's default, which only matters for
    training."""
    policy.actor[0].weight.mul_(gain)
    policy.actor[0].bias.zero_()


def build_sthsth(model_config, seed: int = 0, calibration_batch: int = 4) -> SthSthAdaFocus:
    """The Sth-Sth reference matching `model_config` (random weights, calibrated and randomised BN),
    in eval mode."""
    torch.manual_seed(seed)
    c = model_config
    mobilenet = MobileNetV2("tsm", c.num_classes, c.glancer.width_mult, c.glancer.last_channel,
                            num_segments=c.num_glance_frames)
    focuser = SthSthFocuser(c.focuser.width, tuple(c.focuser.stage_sizes), c.num_focus_frames)
    fc = nn.Linear(focuser.num_features, c.num_classes)
    policy = ContinuousActorCritic(c.num_glance_frames * mobilenet.last_channel, _map_size(c),
                                   c.policy.encoder_channels, c.policy.hidden_dim,
                                   with_bn=c.policy.encoder_bn)
    model = SthSthAdaFocus(Glancer(mobilenet), focuser, fc, policy, c.patch_size,
                           c.num_glance_frames, c.num_focus_frames)
    _spread_actor(policy)
    gen = torch.Generator().manual_seed(seed + 1)
    calibration = (random_frames(calibration_batch, c.num_glance_frames, c.input_size, gen),
                   random_frames(calibration_batch, c.num_focus_frames, c.input_size, gen))
    return calibrate_batch_norm(model, calibration, gen)


def build_anet(model_config, seed: int = 0, calibration_batch: int = 4) -> ANetAdaFocus:
    """The ActivityNet-family reference matching `model_config` (random weights, calibrated and
    randomised BN), in eval mode."""
    torch.manual_seed(seed)
    c = model_config
    mobilenet = MobileNetV2("torchvision", c.num_classes, c.glancer.width_mult,
                            c.glancer.last_channel)
    focuser = ANetFocuser(c.num_classes, c.focuser.width, tuple(c.focuser.stage_sizes))
    fc = RecurrentClassifier(mobilenet.last_channel + focuser.num_features,
                             c.classifier.hidden_dim, c.num_classes, c.classifier.dropout)
    policy = DiscreteActorCritic(mobilenet.last_channel, _map_size(c), c.policy.encoder_channels,
                                 c.policy.hidden_dim, c.policy.grid_size ** 2)
    model = ANetAdaFocus(Glancer(mobilenet), focuser, fc, policy, c.patch_size)
    _spread_actor(policy)
    gen = torch.Generator().manual_seed(seed + 1)
    frames = random_frames(calibration_batch, c.num_glance_frames, c.input_size, gen)
    return calibrate_batch_norm(model, (frames,),
                                gen)


# --------------------------------------------------------------------------------------------------
# AdaFocusV2 (adafocus_family.md §1.2): the networks with the official module names, so that
# `state_dict()` has the released V2 key layout (`module.global_CNN...` after DataParallelNames).
# --------------------------------------------------------------------------------------------------

def v2_frame_order(num_frames: int) -> list:
    """The `--sample` order: middle, first, last, then the midpoints of 2, 4, 8, ... intervals of
    floor(linspace(0, T − 1, q + 1)), each index once (written as plainly as possible)."""
    order = []
    for index in ((num_frames - 1) // 2, 0, num_frames - 1):
        if index not in order:
            order.append(index)
    q = 2
    while len(order) < num_frames:
        edges = [math.floor(i * (num_frames - 1) / q) for i in range(q + 1)]
        for lo, hi in zip(edges[:-1], edges[1:]):
            if (lo + hi) // 2 not in order:
                order.append((lo + hi) // 2)
        q *= 2
    return order


class V2PolicyANet(nn.Module):
    """ActivityNet V2 `policy_stn`: encoder (conv, BN2d, tanh, flatten, Linear, BN1d, tanh), a GRU
    over the frames, fc = (Linear(2), sigmoid)."""

    def __init__(self, feature_dim, map_size, hidden_dim, num_frames):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(feature_dim, 64, 1, bias=False), nn.BatchNorm2d(64), nn.Tanh(), nn.Flatten(),
            nn.Linear(64 * map_size * map_size, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.Tanh())
        self.gru = nn.GRU(hidden_dim, hidden_dim, batch_first=True)
        self.fc = nn.Sequential(nn.Linear(hidden_dim, 2), nn.Sigmoid())
        self.num_frames, self.hidden_dim = num_frames, hidden_dim

    def forward(self, maps):
        """`[N*T, C, m, m]` → actions `[N*T, 2]` (row, col)."""
        x = self.encoder(maps).view(-1, self.num_frames, self.hidden_dim)
        out, _ = self.gru(x)
        return self.fc(out.reshape(-1, self.hidden_dim))


class V2FrameExitClassifier(nn.Module):
    """ActivityNet V2 `classifier`: mlp.layers = (Linear(4096), BN1d, ReLU), running max over the
    frames, classifiers[t] = (Dropout, Linear) per frame."""

    def __init__(self, input_dim, num_frames, num_classes, hidden_dim=4096, dropout=0.2):
        super().__init__()
        self.mlp = nn.Module()
        self.mlp.layers = nn.Sequential(nn.Linear(input_dim, hidden_dim),
                                        nn.BatchNorm1d(hidden_dim), nn.ReLU())
        self.classifiers = nn.ModuleList(
            [nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden_dim, num_classes))
             for _ in range(num_frames)])
        self.num_frames = num_frames

    def forward(self, features):
        """`[N, T, D]` → step logits `[N, T, K]`."""
        n, t, d = features.shape
        z = self.mlp.layers(features.reshape(n * t, d)).view(n, t, -1)
        running, outs = z[:, 0], []
        for i in range(t):
            if i > 0:
                running = torch.maximum(running, z[:, i])
            outs.append(self.classifiers[i](running))
        return torch.stack(outs, 1)


class ANetAdaFocusV2(nn.Module):
    """ActivityNet V2 (inference): global_CNN (TSM-layout MobileNetV2 with its unused 1000-way
    classifier) + global_CNN_fc, local_CNN (torchvision ResNet with its unused fc) + local_CNN_fc,
    policy_stn, classifier. Frames arrive in the coarse-to-fine order already."""

    def __init__(self, c):
        super().__init__()
        self.global_CNN = MobileNetV2("tsm", 1000, c.glancer.width_mult, c.glancer.last_channel)
        g = self.global_CNN.last_channel
        self.global_CNN_fc = nn.Sequential(nn.Dropout(0.2), nn.Linear(g, c.num_classes))
        self.local_CNN = ResNet(1000, c.focuser.width, tuple(c.focuser.stage_sizes))
        f = self.local_CNN.num_features
        self.local_CNN_fc = nn.Sequential(nn.Dropout(0.2), nn.Linear(f, c.num_classes))
        self.policy_stn = V2PolicyANet(g, _map_size(c), c.policy.hidden_dims[0],
                                       c.num_glance_frames)
        self.classifier = V2FrameExitClassifier(g + f, c.num_glance_frames, c.num_classes,
                                                c.classifier.hidden_dim)
        self.patch_size, self.num_frames = c.patch_size, c.num_glance_frames

    def forward(self, frames):
        """frames `[N, T, 3, S, S]` (coarse-to-fine order) → dict of logits `[N, K]`, step logits
        `[N, T, K]`, actions `[N, T, 2]`, top-left boxes `[N, T, 2]`."""
        n, t, _, s, _ = frames.shape
        images = frames.reshape(n * t, 3, s, s)
        maps = self.global_CNN.features(images)
        global_feat = maps.mean(dim=(2, 3))
        actions = self.policy_stn(maps)
        top_left = actions * (s - self.patch_size)
        patches = v2_grid_patches(images, top_left, self.patch_size)
        local_feat = torch.flatten(self.local_CNN.get_featmap(patches), 1)
        cat = torch.cat([global_feat, local_feat], -1).view(n, t, -1)
        step_logits = self.classifier(cat)
        return {"logits": step_logits[:, -1], "step_logits": step_logits,
                "actions": actions.view(n, t, 2), "top_left": top_left.view(n, t, 2),
                "global_logits": self.global_CNN_fc(global_feat).view(n, t, -1),
                "local_logits": self.local_CNN_fc(local_feat).view(n, t, -1)}


class V2TSN(nn.Module):
    """The V2 TSN: base_model (head replaced by a parameterless Dropout), `new_fc` on the detached
    features and `new_new_fc` ("reg") on the features; segment consensus = mean."""

    def __init__(self, base_model, feature_dim, num_classes, num_segments):
        super().__init__()
        self.base_model = base_model
        self.new_fc = nn.Linear(feature_dim, num_classes)
        self.new_new_fc = nn.Linear(feature_dim, num_classes)
        self.num_segments = num_segments

    def heads(self, features):
        """`[N*T, F]` → (mean logits `[N, K]`, mean reg logits `[N, K]`)."""
        base = self.new_fc(features.detach()).view(-1, self.num_segments, self.new_fc.out_features)
        reg = self.new_new_fc(features).view(-1, self.num_segments, self.new_fc.out_features)
        return base.mean(1), reg.mean(1)


class SthSthAdaFocusV2(nn.Module):
    """Sth-Sth V2 (inference): TSM MobileNetV2 / ResNet-50 TSNs, the MLP `policy_stn` over the
    channel-concatenated glance maps (one location per video), logits summed."""

    def __init__(self, c):
        super().__init__()
        mobilenet = MobileNetV2("tsm", None, c.glancer.width_mult, c.glancer.last_channel,
                                num_segments=c.num_glance_frames)
        self.global_CNN = V2TSN(mobilenet, mobilenet.last_channel, c.num_classes,
                                c.num_glance_frames)
        resnet = ResNet(None, c.focuser.width, tuple(c.focuser.stage_sizes), c.num_focus_frames)
        self.local_CNN = V2TSN(resnet, resnet.num_features, c.num_classes, c.num_focus_frames)
        m = _map_size(c)
        d1, d2 = c.policy.hidden_dims
        self.policy_stn = nn.Sequential(
            nn.Conv2d(c.num_glance_frames * mobilenet.last_channel, 64, 1, bias=False),
            nn.BatchNorm2d(64), nn.Tanh(), nn.Flatten(), nn.Linear(64 * m * m, d1),
            nn.BatchNorm1d(d1), nn.Tanh(), nn.Linear(d1, d2), nn.BatchNorm1d(d2), nn.Tanh(),
            nn.Linear(d2, 2), nn.Sigmoid())
        self.patch_size = c.patch_size
        self.tg, self.tl = c.num_glance_frames, c.num_focus_frames

    def forward(self, glance, focus):
        """glance `[N, T_G, 3, S, S]`, focus `[N, T_L, 3, S, S]` → dict of logits `[N, K]`,
        actions and top-left `[N, 1, 2]`, reg logits."""
        n, s = glance.shape[0], glance.shape[-1]
        maps = self.global_CNN.base_model.features(glance.reshape(n * self.tg, 3, s, s))
        g_logit, g_reg = self.global_CNN.heads(maps.mean(dim=(2, 3)))
        stacked = maps.reshape(n, self.tg * maps.shape[1], *maps.shape[2:])   # frame-major
        actions = self.policy_stn(stacked)
        top_left = actions * (s - self.patch_size)
        per_frame = top_left.repeat_interleave(self.tl, 0)
        patches = v2_grid_patches(focus.reshape(n * self.tl, 3, s, s), per_frame, self.patch_size)
        local = torch.flatten(self.local_CNN.base_model.get_featmap(patches), 1)
        l_logit, l_reg = self.local_CNN.heads(local)
        return {"logits": g_logit + l_logit, "actions": actions[:, None],
                "top_left": top_left[:, None], "global_reg": g_reg, "local_reg": l_reg}


def v2_file(model: nn.Module, with_module_prefix: bool = True) -> dict:
    """A released V2 checkpoint: `{'state_dict': DataParallel(model).state_dict(), ...}`."""
    wrapped = DataParallelNames(model) if with_module_prefix else model
    return {"epoch": 50, "state_dict": wrapped.state_dict(), "best_prec1": torch.tensor(60.5)}


def build_v2(model_config, seed: int = 0, calibration_batch: int = 4) -> nn.Module:
    """The V2 reference of `model_config` (ActivityNet family or Sth-Sth), random weights,
    calibrated and randomised BN, eval mode."""
    torch.manual_seed(seed)
    c = model_config
    gen = torch.Generator().manual_seed(seed + 1)
    if c.policy.per_frame:
        model = ANetAdaFocusV2(c)
        inputs = (random_frames(calibration_batch, c.num_glance_frames, c.input_size, gen),)
        actor = model.policy_stn.fc[0]
    else:
        model = SthSthAdaFocusV2(c)
        inputs = (random_frames(calibration_batch, c.num_glance_frames, c.input_size, gen),
                  random_frames(calibration_batch, c.num_focus_frames, c.input_size, gen))
        actor = model.policy_stn[-2]
    with torch.no_grad():   # locations that depend on the input and spread over the frame
        actor.weight.mul_(6.0)
        actor.bias.zero_()
    return calibrate_batch_norm(model, inputs, gen)
