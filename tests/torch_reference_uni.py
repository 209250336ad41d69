"""Plain-PyTorch references of Uni-AdaFocus: the ActivityNet / FCVID / Mini-Kinetics variant and the
TSM (Something-Something / Jester) variant (tests only).

Written from the structure of the official `models/uni_adafocus.py` (LeapLabTHU/Uni-AdaFocus, as
summarised in `shared/reference/adafocus_family.md` §1.4), not copied from it: the attribute names
below are the official ones, so `DataParallelNames(UniAdaFocusANet(c)).state_dict()` has the key
names and shapes of the released `actnet_p128.pth.tar` / `fcvid_p128.pth.tar` /
`minik_p128.pth.tar` (`{'epoch', 'state_dict', 'optimizer', 'best_acc1'}`, the state dict of the
DistributedDataParallel model, hence `module.`-prefixed):

| key prefix (after `module.`) | network |
|---|---|
| `global_CNN.features.*`, `global_CNN.classifier.*` (1000-way, never used) | MobileNetV2, tonylins layout |
| `global_CNN_fc.1.*` | glance head (`Sequential(Dropout, Linear)`) |
| `local_CNN.*`, `local_CNN.fc.*` (1000-way, never used) | torchvision ResNet-50 |
| `local_CNN_fc.1.*` | local head |
| `aux_fc.*` | the spatial policy's proxy head (Linear over the glance channels) |
| `spatial_policy.encoder.{0,1,3,4,6,7,9}` | Conv3d 1×1×1, BN3d, ReLU, Conv3d 3³, BN3d, ReLU, Conv3d 3³, BN3d, ReLU, Conv3d 1×h×w → 4, Sigmoid |
| `temporal_policy.Tconv.{0,1,3,4,6}` | Conv2d (3, 1), BN2d, ReLU, Conv2d (3, 1), BN2d, ReLU, Conv2d 1×1 → 1 |
| `classifier.{global,local}_mlp.layers.{0,1}`, `classifier.{global,local}_classifiers.i.1` | the FrameExit-style pooling classifier |

`UniAdaFocusTSM` is written from `archs/uni_adafocus_tsm.py` of the TSM code the same way; its
released files (`sthv1_p96_8and8.pth.tar` … `sthv2_p128_8and16.pth.tar`, `jester_p128_8and12`)
hold `{'epoch', 'arch', 'state_dict', 'optimizer', 'best_prec1', 'scaler'}` with `module.`-prefixed
keys `global_CNN.base_model.*` (TSM MobileNetV2; its classifier is a Dropout), `global_CNN.new_fc`,
`global_CNN.new_new_fc`, `local_CNN.base_model.*` (TSM ResNet-50, fc a Dropout), `local_CNN.new_fc`,
`local_CNN.new_new_fc`, `aux_fc`, `spatial_policy.encoder.*` (the last Conv3d G×h×w) and
`temporal_policy.Tconv.*`; no classifier (the logits are summed).

The MobileNetV2 / ResNet / TSN / crop pieces are those of `torch_reference.py`. Image tensors are
NCHW; a video's frames are video-major on the batch axis (row = n · N + t).
"""

import torch
from torch import nn
import torch.nn.functional as F

import torch_reference as tr


class UniTemporalPolicy(nn.Module):
    """`Tconv`: two (3, 1) convs over the glance positions (as rows of a [C, G, 1] image), each
    with BN2d and ReLU, then a 1×1 conv to one channel; no biases. Softmax over the G positions,
    and the same at temperature T."""

    def __init__(self, input_dim, hidden_dim, num_glance, temperature=1.0):
        super().__init__()
        self.Tconv = nn.Sequential(
            nn.Conv2d(input_dim, hidden_dim, (3, 1), padding=(1, 0), bias=False),
            nn.BatchNorm2d(hidden_dim), nn.ReLU(),
            nn.Conv2d(hidden_dim, hidden_dim, (3, 1), padding=(1, 0), bias=False),
            nn.BatchNorm2d(hidden_dim), nn.ReLU(),
            nn.Conv2d(hidden_dim, 1, 1, bias=False))
        self.num_glance, self.temperature = num_glance, temperature

    def forward(self, pooled):
        """`[B·G, C]` → (weights, weights at temperature T) `[B, G]`."""
        c = pooled.shape[-1]
        x = pooled.reshape(-1, self.num_glance, c).transpose(1, 2)[..., None]   # [B, C, G, 1]
        logits = self.Tconv(x).reshape(-1, self.num_glance)
        return logits.softmax(dim=1), (logits / self.temperature).softmax(dim=1)


class UniSpatialPolicy(nn.Module):
    """`encoder`: 3-D convs over (glance frame, row, col) of the stacked glance maps, ending in a
    1 × m × m conv to the four actions per glance frame, sigmoid; with `per_video` (the TSM
    variant) the last conv is G × m × m: four actions per video."""

    def __init__(self, feature_dim, hidden_dim, num_glance, map_size=7, per_video=False):
        super().__init__()
        layers = []
        for i, k in enumerate((1, 3, 3)):
            layers += [nn.Conv3d(feature_dim if i == 0 else hidden_dim, hidden_dim, k,
                                 padding=k // 2, bias=False),
                       nn.BatchNorm3d(hidden_dim), nn.ReLU()]
        depth = num_glance if per_video else 1
        layers += [nn.Conv3d(hidden_dim, 4, (depth, map_size, map_size), bias=False),
                   nn.Sigmoid()]
        self.encoder = nn.Sequential(*layers)
        self.num_glance, self.per_video = num_glance, per_video

    def forward(self, maps):
        """`[B·G, C, m, m]` → actions `[B·G, 4]` (y, x, s_y, s_x), or `[B, 4]` per video."""
        bg, c, h, w = maps.shape
        video = maps.reshape(bg // self.num_glance, self.num_glance, c, h, w).transpose(1, 2)
        out = self.encoder(video)                                   # [B, 4, G or 1, 1, 1]
        steps = 1 if self.per_video else self.num_glance
        return out.reshape(out.shape[0], 4, steps).transpose(1, 2).reshape(-1, 4)


class UniMLP(nn.Module):
    """`layers` = (Linear, BatchNorm1d, ReLU)."""

    def __init__(self, input_dim, hidden_dim=4096):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(input_dim, hidden_dim), nn.BatchNorm1d(hidden_dim),
                                    nn.ReLU())

    def forward(self, x):
        return self.layers(x)


class UniPoolingClassifier(nn.Module):
    """`global_mlp` / `local_mlp` and one (Dropout, Linear) head per step: G global exits on the
    running max of the global MLP features, then K local exits on [running max of the local MLP
    features ‖ the global running max after all G frames]."""

    def __init__(self, global_dim, local_dim, num_glance, num_focus, num_classes,
                 hidden_dim=4096, dropout=0.2):
        super().__init__()
        self.global_mlp = UniMLP(global_dim, hidden_dim)
        self.local_mlp = UniMLP(local_dim, hidden_dim)
        self.global_classifiers = nn.ModuleList(
            [nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden_dim, num_classes))
             for _ in range(num_glance)])
        self.local_classifiers = nn.ModuleList(
            [nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * hidden_dim, num_classes))
             for _ in range(num_focus)])

    def forward(self, global_feat, local_feat):
        """`[B, G, C_G]`, `[B, K, F]` → step logits `[B, G + K, C]` (the last is the prediction)."""
        b, g, _ = global_feat.shape
        k = local_feat.shape[1]
        zg = self.global_mlp(global_feat.reshape(b * g, -1)).reshape(b, g, -1)
        zl = self.local_mlp(local_feat.reshape(b * k, -1)).reshape(b, k, -1)
        steps = []
        pooled_g = zg[:, 0]
        for i, head in enumerate(self.global_classifiers):
            pooled_g = pooled_g if i == 0 else torch.maximum(pooled_g, zg[:, i])
            steps.append(head(pooled_g))
        pooled_l = zl[:, 0]
        for i, head in enumerate(self.local_classifiers):
            pooled_l = pooled_l if i == 0 else torch.maximum(pooled_l, zl[:, i])
            steps.append(head(torch.cat([pooled_l, pooled_g], dim=1)))
        return torch.stack(steps, dim=1)


def quantile_indices(weights: torch.Tensor, num_candidates: int, num_chosen: int,
                     u: float = 0.5) -> torch.Tensor:
    """The official test-time frame choice, one video at a time, in float32: thresholds
    q_i = (i + u) / K on the piecewise-linear CDF through (j / G, w_0 + ... + w_{j-1}) (the last
    node set to 1); the quantile is interpolated on the first node j ≥ 1 whose CDF reaches q_i
    (bin j − 1), the frame is floor(quantile · N); a frame not after its predecessor becomes the
    predecessor + 1, and frame i is at most N − K + i. weights `[B, G]` → int64 `[B, K]`."""
    b, g = weights.shape
    out = torch.zeros(b, num_chosen, dtype=torch.long)
    for n in range(b):
        cdf = torch.cat([torch.zeros(1), weights[n].float().cumsum(0)])
        cdf[-1] = 1.0
        previous = -1
        for i in range(num_chosen):
            q = torch.tensor((i + u) / num_chosen, dtype=torch.float32)
            reached = [j for j in range(g + 1) if bool(cdf[j] >= q)]
            j = min(max(reached[0], 1), g) - 1
            x1 = torch.tensor(j / g, dtype=torch.float32)
            x2 = torch.tensor((j + 1) / g, dtype=torch.float32)
            quantile = (x2 * (q - cdf[j]) - x1 * (q - cdf[j + 1])) / (cdf[j + 1] - cdf[j])
            frame = int(torch.floor(quantile * num_candidates))
            frame = frame if frame > previous else previous + 1
            frame = min(frame, num_candidates - num_chosen + i)
            out[n, i] = previous = frame
    return out


class UniAdaFocusANet(nn.Module):
    """Uni-AdaFocus on MobileNetV2 + ResNet-50 with the official module names (test-time
    forward). `c` is our model config (`models.uni_model_config` or a tiny one)."""

    def __init__(self, c):
        super().__init__()
        g, k = c.num_glance_frames, c.num_focus_frames
        self.global_CNN = tr.MobileNetV2("tsm", 1000, c.glancer.width_mult, c.glancer.last_channel)
        gdim = self.global_CNN.last_channel
        self.global_CNN_fc = nn.Sequential(nn.Dropout(c.glancer.dropout),
                                           nn.Linear(gdim, c.num_classes))
        self.aux_fc = nn.Linear(gdim, c.num_classes)
        self.local_CNN = tr.ResNet(1000, c.focuser.width, tuple(c.focuser.stage_sizes))
        ldim = self.local_CNN.num_features
        self.local_CNN_fc = nn.Sequential(nn.Dropout(c.focuser.dropout),
                                          nn.Linear(ldim, c.num_classes))
        p = c.policy
        self.spatial_policy = UniSpatialPolicy(gdim, p.spatial_hidden, g, tr._map_size(c))
        self.temporal_policy = UniTemporalPolicy(gdim, p.temporal_hidden, g, p.temperature)
        self.classifier = UniPoolingClassifier(gdim, ldim, g, k, c.num_classes,
                                               c.classifier.hidden_dim, c.classifier.dropout)
        self.num_candidates, self.num_glance, self.num_focus = c.num_candidate_frames, g, k
        self.patch_size, self.side_range = c.patch_size, tuple(p.side_range)

    def forward(self, frames):
        """frames `[B, N, 3, S, S]` → dict: `logits` `[B, C]`, `step_logits` `[B, G + K, C]`,
        `frame_indices` `[B, K]`, `weights` (temperature T) `[B, G]`, `actions` `[B, K, 4]`,
        `top_left` and `side` `[B, K, 2]` (frame pixels), `global_logits` `[B, G, C]`,
        `local_features` `[B, K, F]`, `local_logits` `[B, K, C]`, `spatial_logits` `[B, C]` (the proxy head)."""
        b, n, _, s, _ = frames.shape
        g, k, p = self.num_glance, self.num_focus, self.patch_size
        images = frames.reshape(b * n, 3, s, s)
        # The second frame of each of the G segments of N / G candidates.
        glance_rows = (torch.arange(n)[1::n // g][None] + n * torch.arange(b)[:, None]).reshape(-1)
        maps = self.global_CNN.features(images[glance_rows])               # [B·G, C, m, m]
        pooled = maps.mean(dim=(2, 3))
        global_logits = self.global_CNN_fc(pooled)
        actions = self.spatial_policy(maps)                                # [B·G, 4]
        # Linear in time from the G glance frames to the N candidates (align_corners=False).
        per_frame = F.interpolate(actions.reshape(b, g, 4).transpose(1, 2), n, mode="linear",
                                  align_corners=False).transpose(1, 2).reshape(b * n, 4)
        _, weights_t = self.temporal_policy(pooled)
        # The proxy head: each glance frame's box cropped from its own map (P · m / S cells).
        m = maps.shape[-1]
        cells = max(1, p * m // s)
        crops = tr.uni_grid_patches(maps, actions, cells, p, self.side_range)
        spatial_logits = self.aux_fc(crops.reshape(b, g, -1, cells, cells).mean(dim=(1, 3, 4)))
        chosen = quantile_indices(weights_t, n, k)                         # [B, K]
        rows = (chosen + n * torch.arange(b)[:, None]).reshape(-1)
        box_actions = per_frame[rows]
        top_left, side = tr.uni_box(box_actions, s, p, p, self.side_range)
        patches = tr.v2_grid_patches(images[rows], top_left, p, side)
        local_feat = torch.flatten(self.local_CNN.get_featmap(patches), 1)
        step_logits = self.classifier(pooled.reshape(b, g, -1), local_feat.reshape(b, k, -1))
        return {"logits": step_logits[:, -1], "step_logits": step_logits, "frame_indices": chosen,
                "weights": weights_t, "actions": box_actions.reshape(b, k, 4),
                "top_left": top_left.reshape(b, k, 2), "side": side.reshape(b, k, 2),
                "global_logits": global_logits.reshape(b, g, -1),
                "local_features": local_feat.reshape(b, k, -1),
                "local_logits": self.local_CNN_fc(local_feat).reshape(b, k, -1),
                "spatial_logits": spatial_logits}


class UniAdaFocusTSM(nn.Module):
    """Uni-AdaFocus-TSM (Something-Something / Jester) with the official module names
    (`archs/uni_adafocus_tsm.py`, test-time forward): the V2 Sth-Sth TSNs (`global_CNN` = TSM
    MobileNetV2 on the G glance frames, `local_CNN` = TSM ResNet-50 on the K patches, each with
    `new_fc` on the detached features and `new_new_fc`), `aux_fc`, the spatial policy with one
    action per video and the temporal policy. `c` is our model config
    (`models.uni_model_config("sthv2", ...)` or a tiny one)."""

    def __init__(self, c):
        super().__init__()
        g, k = c.num_glance_frames, c.num_focus_frames
        mobilenet = tr.MobileNetV2("tsm", None, c.glancer.width_mult, c.glancer.last_channel,
                                   num_segments=g)
        gdim = mobilenet.last_channel
        self.global_CNN = tr.V2TSN(mobilenet, gdim, c.num_classes, g)
        resnet = tr.ResNet(None, c.focuser.width, tuple(c.focuser.stage_sizes), k)
        self.local_CNN = tr.V2TSN(resnet, resnet.num_features, c.num_classes, k)
        self.aux_fc = nn.Linear(gdim, c.num_classes)
        p = c.policy
        self.spatial_policy = UniSpatialPolicy(gdim, p.spatial_hidden, g, tr._map_size(c),
                                               per_video=True)
        self.temporal_policy = UniTemporalPolicy(gdim, p.temporal_hidden, g, p.temperature)
        self.num_candidates, self.num_glance, self.num_focus = c.num_candidate_frames, g, k
        self.patch_size, self.side_range = c.patch_size, tuple(p.side_range)

    def forward(self, glance, candidates):
        """glance `[B, G, 3, S, S]`, candidates `[B, N, 3, S, S]` → dict: `logits` `[B, C]` (mean
        glance logits + mean local logits), `step_logits` `[B, 2, C]` (the glance-only exit, the
        mean `new_new_fc` logits, then `logits`), `frame_indices` `[B, K]`, `weights`
        (temperature T) `[B, G]`, `actions` `[B, 1, 4]`, `top_left` and `side` `[B, 1, 2]`
        (frame pixels), `global_logits` `[B, G, C]` (per-frame `new_fc`), `local_features`
        `[B, K, F]`, `spatial_logits` `[B, C]` (the proxy head)."""
        b, n, _, s, _ = candidates.shape
        g, k, p = self.num_glance, self.num_focus, self.patch_size
        # [B·G, C, m, m]
        maps = self.global_CNN.base_model.features(glance.reshape(b * g, 3, s, s))
        pooled = maps.mean(dim=(2, 3))        # the TSN's features (its head is a Dropout)
        glance_logits, glance_reg = self.global_CNN.heads(pooled)
        _, weights_t = self.temporal_policy(pooled)
        actions = self.spatial_policy(maps)                                # [B, 4]
        # The proxy head: the video's box cropped from all G maps at once ([B, G·C, m, m]).
        c, m = maps.shape[1], maps.shape[-1]
        cells = max(1, p * m // s)
        crops = tr.uni_grid_patches(maps.reshape(b, g * c, m, m), actions, cells, p,
                                    self.side_range)
        spatial_logits = self.aux_fc(crops.reshape(b, g, c, cells, cells).mean(dim=(1, 3, 4)))
        chosen = quantile_indices(weights_t, n, k)                         # [B, K]
        rows = (chosen + n * torch.arange(b)[:, None]).reshape(-1)
        # The K chosen frames as one [3K]-channel image per video: one box for all of them.
        focus = candidates.reshape(b * n, 3, s, s)[rows].reshape(b, k * 3, s, s)
        top_left, side = tr.uni_box(actions, s, p, p, self.side_range)
        patches = tr.v2_grid_patches(focus, top_left, p, side).reshape(b * k, 3, p, p)
        local_feat = torch.flatten(self.local_CNN.base_model.get_featmap(patches), 1)
        local_logits, _ = self.local_CNN.heads(local_feat)
        logits = glance_logits + local_logits
        # The two exits of the official early-exit model (`archs/uni_adafocus_tsm_exit.py`).
        return {"logits": logits, "step_logits": torch.stack([glance_reg, logits], dim=1),
                "frame_indices": chosen, "weights": weights_t, "actions": actions[:, None],
                "top_left": top_left[:, None], "side": side[:, None],
                "global_logits": self.global_CNN.new_fc(pooled).reshape(b, g, -1),
                "local_features": local_feat.reshape(b, k, -1),
                "spatial_logits": spatial_logits}


def uni_file(model: nn.Module) -> dict:
    """A released Uni checkpoint, `state_dict` `module.`-prefixed (DistributedDataParallel):
    ActivityNet family `{'epoch', 'state_dict', 'optimizer', 'best_acc1'}`; TSM (`main.py` of
    the TSM code) `{'epoch', 'arch', 'state_dict', 'optimizer', 'best_prec1', 'scaler'}`."""
    wrapped = tr.DataParallelNames(model)
    out = {"epoch": 50, "state_dict": wrapped.state_dict(),
           "optimizer": tr._optimizer_state(wrapped)}
    if isinstance(model, UniAdaFocusTSM):
        scaler = {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                  "growth_interval": 2000, "_growth_tracker": 17}   # GradScaler.state_dict()
        return {**out, "arch": "resnet50", "best_prec1": 64.2, "scaler": scaler}
    return {**out, "best_acc1": torch.tensor(80.7)}


def build_uni(model_config, seed: int = 0, calibration_batch: int = 3) -> nn.Module:
    """The reference of `model_config` (`UniAdaFocusANet`, or `UniAdaFocusTSM` when
    `policy.per_frame` is False; random weights; BN statistics calibrated on random videos, then
    randomised), eval mode. The last spatial and temporal convs are scaled up so that boxes and
    frame choices depend clearly on the input."""
    torch.manual_seed(seed)
    c = model_config
    model = UniAdaFocusANet(c) if c.policy.per_frame else UniAdaFocusTSM(c)
    with torch.no_grad():
        model.spatial_policy.encoder[-2].weight.mul_(2.0)
        model.temporal_policy.Tconv[-1].weight.mul_(2.0)
    gen = torch.Generator().manual_seed(seed + 1)
    frames = tr.random_frames(calibration_batch, c.num_candidate_frames, c.input_size, gen)
    if c.policy.per_frame:
        return tr.calibrate_batch_norm(model, (frames,), gen)
    glance = tr.random_frames(calibration_batch, c.num_glance_frames, c.input_size, gen)
    return tr.calibrate_batch_norm(model, (glance, frames), gen)
