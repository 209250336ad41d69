"""Key-name tables per network: Flax module path → PyTorch key base (adafocus_v1.md §10.4).

Each entry is (flax path below the module, torch key base, op) with op one of "conv", "bn",
"dense", "gru", "conv3d" (OIDHW → DHWIO) and "conv_k1" (a (k, 1) Conv2d → a 1-D conv): MobileNetV2
(TSM and torchvision layouts), ResNet-50 (TSM, TSN Sequential and torchvision styles), the V1
policy and classifier, the V2 policy and heads, the Uni policy and exit classifier.
"""

from __future__ import annotations

from adafocus_jax.models.mobilenet_v2 import block_specs
from adafocus_jax.convert.reading import CheckpointError, _Source


# Indices of the truncated TSN Sequential (children of torchvision's ResNet minus fc, §2.4).
_TSN_SEQUENTIAL_NAMES = {"conv1": "0", "bn1": "1", "layer1": "4", "layer2": "5", "layer3": "6",
                         "layer4": "7"}


def _v2_policy_entries(cfg) -> list[tuple[tuple[str, ...], str, str]]:
    if cfg.policy.per_frame:   # encoder (conv, BN2d, tanh, flatten, Linear, BN1d, tanh), GRU, fc
        return [(("encoder_conv",), "v2_anet.encoder.0", "conv"),
                (("encoder_conv_bn",), "v2_anet.encoder.1", "bn"),
                (("dense0",), "v2_anet.encoder.4", "dense"),
                (("dense0_bn",), "v2_anet.encoder.5", "bn"),
                (("gru",), "v2_anet.gru", "gru"), (("actor",), "v2_anet.fc.0", "dense")]
    # Sequential: conv, BN2d, tanh, flatten, Linear, BN1d, tanh, Linear, BN1d, tanh, Linear, sigmoid
    return [(("encoder_conv",), "v2_sth.0", "conv"), (("encoder_conv_bn",), "v2_sth.1", "bn"),
            (("dense0",), "v2_sth.4", "dense"), (("dense0_bn",), "v2_sth.5", "bn"),
            (("dense1",), "v2_sth.7", "dense"), (("dense1_bn",), "v2_sth.8", "bn"),
            (("actor",), "v2_sth.10", "dense")]


def _v2_entries(path: str, module: str, source: _Source, cfg):
    """Name maps of the AdaFocusV2 modules (keys as renamed by `_split_v2_sources`)."""
    sth = not cfg.policy.per_frame
    if module == "glancer":
        entries = _mobilenet_entries(cfg, _mobilenet_layout(path, source))
        return entries + ([(("reg_classifier",), "net.reg_classifier", "dense")] if sth else [])
    if module == "focuser":
        entries = _resnet_entries(cfg, _resnet_style(path, source))
        return entries + ([(("reg_fc",), "net.reg_fc", "dense")] if sth else [])
    if module == "policy":
        return _v2_policy_entries(cfg)
    return ([(("mlp",), "mlp.layers.0", "dense"), (("mlp_bn",), "mlp.layers.1", "bn")]
            + [((f"head{t}",), f"classifiers.{t}.1", "dense")
               for t in range(cfg.num_glance_frames)])


def _uni_entries(path: str, module: str, source: _Source, cfg):
    """Name maps of the Uni-AdaFocus modules (keys as renamed by `inspection._split_uni_sources`;
    backbones and heads as in V2 of the same family; the TSM variant has no classifier and its
    spatial `out` conv spans the G glance frames, which the Conv3d rule converts as it is)."""
    if module in ("glancer", "focuser"):
        return _v2_entries(path, module, source, cfg)
    if module == "policy":   # Tconv: conv, BN, ReLU, conv, BN, ReLU, conv; encoder: 3 × (conv,
        # BN, ReLU), conv, sigmoid
        temporal = [(("temporal", name), f"temporal_policy.Tconv.{i}", op)
                    for name, i, op in (("conv0", 0, "conv_k1"), ("bn0", 1, "bn"),
                                        ("conv1", 3, "conv_k1"), ("bn1", 4, "bn"),
                                        ("out", 6, "conv_k1"))]
        spatial = [(("spatial", name), f"spatial_policy.encoder.{i}", op)
                   for name, i, op in (("conv0", 0, "conv3d"), ("bn0", 1, "bn"),
                                       ("conv1", 3, "conv3d"), ("bn1", 4, "bn"),
                                       ("conv2", 6, "conv3d"), ("bn2", 7, "bn"),
                                       ("out", 9, "conv3d"))]
        return temporal + spatial + [(("aux_fc",), "aux_fc", "dense")]
    entries = []
    for part in ("global", "local"):
        entries += [((f"{part}_mlp",), f"{part}_mlp.layers.0", "dense"),
                    ((f"{part}_mlp_bn",), f"{part}_mlp.layers.1", "bn")]
    entries += [((f"global_head{t}",), f"global_classifiers.{t}.1", "dense")
                for t in range(cfg.num_glance_frames)]
    return entries + [((f"local_head{t}",), f"local_classifiers.{t}.1", "dense")
                      for t in range(cfg.num_focus_frames)]


def _mobilenet_layout(path: str, source: _Source) -> str:
    state = source.state
    if "net.features.1.conv.0.0.weight" in state:
        return "torchvision"
    if "net.features.1.conv.0.weight" in state:
        return "tsm"
    raise CheckpointError(f"{path}: {source.where} is not a MobileNetV2 glancer state dict "
                          f"(no 'net.features.1.conv.0[.0].weight'; first keys "
                          f"{sorted(state)[:3]})")


def _mobilenet_entries(cfg, layout: str) -> list[tuple[tuple[str, ...], str, str]]:
    arch = cfg.glancer.get("arch", "mobilenet_v2")
    if arch != "mobilenet_v2":
        raise CheckpointError(f"official checkpoints hold a MobileNetV2 glance network, but "
                              f"config.model.glancer.arch = {arch!r}")
    entries = [(("stem_conv",), "net.features.0.0", "conv"),
               (("stem_bn",), "net.features.0.1", "bn")]
    specs = block_specs(cfg.glancer.width_mult)
    for index, (in_ch, _, hidden, _, residual) in enumerate(specs, 1):
        base = f"net.features.{index}.conv"
        block = f"block{index}"
        if hidden == in_ch:  # t = 1: depthwise, project
            names = ({"tsm": "0", "torchvision": "0.0"}, {"tsm": "1", "torchvision": "0.1"},
                     {"tsm": "3", "torchvision": "1"}, {"tsm": "4", "torchvision": "2"})
            ops = (("depthwise_conv", "conv"), ("depthwise_bn", "bn"), ("project_conv", "conv"),
                   ("project_bn", "bn"))
        else:
            names = ({"tsm": "0", "torchvision": "0.0"}, {"tsm": "1", "torchvision": "0.1"},
                     {"tsm": "3", "torchvision": "1.0"}, {"tsm": "4", "torchvision": "1.1"},
                     {"tsm": "6", "torchvision": "2"}, {"tsm": "7", "torchvision": "3"})
            ops = (("expand_conv", "conv"), ("expand_bn", "bn"), ("depthwise_conv", "conv"),
                   ("depthwise_bn", "bn"), ("project_conv", "conv"), ("project_bn", "bn"))
        shifted = layout == "tsm" and cfg.glancer.temporal_shift and residual and hidden != in_ch
        for position, (name, (flax_name, op)) in enumerate(zip(names, ops)):
            key = f"{base}.{name[layout]}"
            if shifted and position == 0:
                key += ".net"  # TemporalShift(net=conv) (§2.1)
            entries.append(((block, flax_name), key, op))
    head = len(specs) + 1
    entries += [(("head_conv",), f"net.features.{head}.0", "conv"),
                (("head_bn",), f"net.features.{head}.1", "bn")]
    classifier = "net.classifier" if layout == "tsm" else "net.classifier.1"
    entries.append((("classifier",), classifier, "dense"))
    return entries


def _resnet_style(path: str, source: _Source) -> str:
    state = source.state
    for style, key in (("tsn", "net.base_model.0.weight"), ("torchvision", "net.conv1.weight"),
                       ("tsm_file", "conv1.weight")):
        if key in state:
            return style
    raise CheckpointError(f"{path}: {source.where} is not a ResNet focuser state dict (no "
                          f"'net.base_model.0.weight' or 'net.conv1.weight'; first keys "
                          f"{sorted(state)[:3]})")


def _resnet_entries(cfg, style: str) -> list[tuple[tuple[str, ...], str, str]]:
    """style: "tsn" (Sth-Sth focuser, truncated Sequential), "torchvision" (ANet focuser, `net.`
    prefix) or "tsm_file" (TSM pre-training file below `module.base_model.`)."""
    prefix = {"tsn": "net.base_model.", "torchvision": "net.", "tsm_file": ""}[style]

    def name(torchvision_name: str) -> str:
        head, _, rest = torchvision_name.partition(".")
        if style == "tsn":
            head = _TSN_SEQUENTIAL_NAMES[head]
        return prefix + ".".join(filter(None, (head, rest)))

    shift = ".net" if cfg.focuser.temporal_shift else ""
    entries = [(("conv1",), name("conv1"), "conv"), (("bn1",), name("bn1"), "bn")]
    for stage, num_blocks in enumerate(cfg.focuser.stage_sizes):
        for block in range(num_blocks):
            flax_block = f"layer{stage + 1}_{block}"
            base = f"layer{stage + 1}.{block}"
            entries += [((flax_block, "conv1"), name(f"{base}.conv1{shift}"), "conv"),
                        ((flax_block, "bn1"), name(f"{base}.bn1"), "bn"),
                        ((flax_block, "conv2"), name(f"{base}.conv2"), "conv"),
                        ((flax_block, "bn2"), name(f"{base}.bn2"), "bn"),
                        ((flax_block, "conv3"), name(f"{base}.conv3"), "conv"),
                        ((flax_block, "bn3"), name(f"{base}.bn3"), "bn")]
            if block == 0:
                entries += [((flax_block, "downsample_conv"), name(f"{base}.downsample.0"), "conv"),
                            ((flax_block, "downsample_bn"), name(f"{base}.downsample.1"), "bn")]
    if cfg.focuser.with_fc:
        entries.append((("fc",), name("fc"), "dense"))
    return entries


def _policy_entries(cfg) -> list[tuple[tuple[str, ...], str, str]]:
    entries = [(("encoder_conv",), "state_encoder.0", "conv")]
    if cfg.policy.encoder_bn:  # conv, BN2d, ReLU, Flatten, Linear, BN1d, ReLU
        entries += [(("encoder_conv_bn",), "state_encoder.1", "bn"),
                    (("encoder_dense",), "state_encoder.4", "dense"),
                    (("encoder_dense_bn",), "state_encoder.5", "bn")]
    else:  # conv, ReLU, Flatten, Linear, ReLU
        entries.append((("encoder_dense",), "state_encoder.3", "dense"))
    entries += [(("gru",), "gru", "gru"), (("actor",), "actor.0", "dense"),
                (("critic",), "critic.0", "dense")]
    return entries


def _classifier_entries(cfg) -> list[tuple[tuple[str, ...], str, str]]:
    if cfg.classifier.kind == "gru":
        return [(("gru",), "gru", "gru"), (("fc",), "fc", "dense")]
    return [(("fc",), "", "dense")]
