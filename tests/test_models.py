"""Shapes and behaviour of the composed model for every config."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adafocus_jax import models

DATASETS = ("sthv1", "sthv2", "actnet", "fcvid", "minik")
PATCHES = {"sthv1": (144, 160, 176), "sthv2": (144, 160, 176),
           "actnet": (96, 128, 160, 192), "fcvid": (96, 128, 160, 192), "minik": (96, 128, 160, 192)}


def _abstract_forward(model_config, batch=2, **kwargs):
    model = models.create_model(model_config)
    glance, focus = models.dummy_inputs(model_config, batch)
    spec = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype)  # noqa: E731
    rngs = {"params": jax.random.key(0), "patches": jax.random.key(1), "actions": jax.random.key(2)}
    variables = jax.eval_shape(lambda g, f: model.init(rngs, g, f), spec(glance), spec(focus))
    out = jax.eval_shape(lambda v, g, f: model.apply(v, g, f, rngs=rngs, **kwargs),
                         variables, spec(glance), spec(focus))
    return variables, out


@pytest.mark.parametrize("dataset", DATASETS)
def test_full_size_shapes_every_config(dataset):
    """Full-size networks, traced abstractly (no compute): every official patch size."""
    for patch in PATCHES[dataset]:
        cfg = models.default_model_config(dataset, patch)
        variables, out = _abstract_forward(cfg)
        steps = 1 if dataset.startswith("sth") else 16
        assert out.logits.shape == (2, cfg.num_classes)
        assert out.step_logits.shape == (2, steps, cfg.num_classes)
        assert out.patch_offsets.shape == (2, steps, 2) and out.patch_offsets.dtype == jnp.int32
        assert out.local_features.shape == (2, cfg.num_focus_frames, 2048)
        params = variables["params"]
        assert set(params) == {"glancer", "focuser", "policy", "classifier"}
        assert params["glancer"]["head_conv"]["kernel"].shape == (1, 1, 320, 1280)
        assert params["focuser"]["layer4_2"]["conv3"]["kernel"].shape == (1, 1, 512, 2048)
        if dataset.startswith("sth"):
            assert params["policy"]["encoder_conv"]["kernel"].shape == (1, 1, 8 * 1280, 64)
            assert params["policy"]["encoder_dense"]["kernel"].shape == (64 * 49, 1024)
            assert params["classifier"]["fc"]["kernel"].shape == (2048, cfg.num_classes)
            assert "fc" not in params["focuser"]
        else:
            assert params["policy"]["actor"]["kernel"].shape == (1024, 49)
            assert params["policy"]["encoder_dense"]["kernel"].shape == (32 * 49, 1024)
            assert params["classifier"]["gru"]["input"]["kernel"].shape == (1280 + 2048, 3072)
            assert params["focuser"]["fc"]["kernel"].shape == (2048, cfg.num_classes)


@pytest.mark.parametrize("dataset", ("sthv2", "actnet"))
def test_tiny_model_modes(dataset):
    cfg = models.tiny_model_config(dataset)
    model = models.create_model(cfg)
    variables = models.init_variables(model, jax.random.key(0), batch_size=2)
    glance = jax.random.normal(jax.random.key(1), (2, cfg.num_glance_frames, 64, 64, 3))
    focus = jax.random.normal(jax.random.key(2), (2, cfg.num_focus_frames, 64, 64, 3))
    apply = jax.jit(model.apply, static_argnames=("train", "patch_mode", "mutable"))

    out1 = apply(variables, glance, focus)
    out2 = apply(variables, glance, focus)
    np.testing.assert_array_equal(out1.logits, out2.logits)
    steps = out1.patch_offsets.shape[1]
    span = cfg.input_size - cfg.patch_size
    assert int(out1.patch_offsets.min()) >= 0 and int(out1.patch_offsets.max()) <= span

    # Given offsets reproduce the deterministic policy's output exactly.
    given = apply(variables, glance, focus, patch_mode="given", patch_offsets=out1.patch_offsets)
    np.testing.assert_allclose(given.logits, out1.logits, rtol=1e-6, atol=1e-6)

    # Random patches never use the last offset and need the 'patches' rng stream.
    rand = apply(variables, glance, focus, patch_mode="random", rngs={"patches": jax.random.key(3)})
    assert rand.patch_offsets.shape == (2, steps, 2) and int(rand.patch_offsets.max()) < span
    assert rand.values is None

    center = apply(variables, glance, focus, patch_mode="center")
    np.testing.assert_array_equal(center.patch_offsets, span // 2)

    # Only the networks marked as training update their BatchNorm statistics.
    modes = models.Modes(focuser=True)
    _, updated = apply(variables, glance, focus, train=modes, patch_mode="center",
                       mutable=("batch_stats",))
    old, new = variables["batch_stats"], updated["batch_stats"]
    changed = lambda a, b: any(  # noqa: E731
        not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    assert changed(old["focuser"], new["focuser"])
    assert not changed(old["glancer"], new["glancer"])

    # Sampling draws from the policy with the 'actions' stream.
    sampled = apply(variables, glance, focus, train=models.Modes(policy=True), patch_mode="sample",
                    rngs={"actions": jax.random.key(4)}, mutable=("batch_stats",))[0]
    if dataset == "sthv2":
        assert sampled.actions.shape == (2, 1, 2)
        assert float(sampled.actions.min()) >= 0 and float(sampled.actions.max()) <= 1
    else:
        assert sampled.actions.shape == (2, steps) and sampled.actions.dtype == jnp.int32


def test_stage0_heads():
    cfg = models.tiny_model_config("actnet")
    model = models.create_model(cfg)
    variables = models.init_variables(model, jax.random.key(0))
    frames = jax.random.normal(jax.random.key(1), (2, 3, 64, 64, 3))
    g = model.apply(variables, frames, method=model.glancer_logits)
    f = model.apply(variables, frames, method=model.focuser_logits)
    assert g.shape == f.shape == (2, cfg.num_classes)


@pytest.mark.parametrize("version", ("v1", "v2"))
def test_resnet_glance_network(version):
    """`glancer.arch = "resnet"`: the glance network is a bottleneck ResNet of `stage_sizes` /
    `width`; its maps and pooled features are exactly that ResNet's on the resized frames."""
    from adafocus_jax.models.resnet import ResNet
    cfg = models.tiny_model_config("actnet")
    if version == "v2":
        cfg = models.to_v2_model_config(cfg)
    cfg.glancer.arch, cfg.glancer.stage_sizes, cfg.glancer.width = "resnet", (1, 1), 4
    model = models.create_model(cfg)
    variables = models.init_variables(model, jax.random.key(0), batch_size=2)
    glancer = variables["params"]["glancer"]
    assert {"conv1", "bn1", "layer1_0", "layer2_0", "fc"} <= set(glancer)
    assert glancer["layer2_0"]["conv3"]["kernel"].shape == (1, 1, 8, 32)   # 4 · 2 · 4 channels
    frames = jax.random.normal(jax.random.key(1), (2, cfg.num_glance_frames, 64, 64, 3))
    method = model.glance if version == "v1" else model.glance_v2
    out = model.apply(variables, frames, method=method)
    maps = out[0] if version == "v1" else out["maps"]
    resized = model.apply(variables, frames, method=model.resize_for_glance)
    g = cfg.glance_size
    assert maps.shape[:2] == (2, cfg.num_glance_frames) and maps.shape[-1] == 32
    plain = ResNet(num_classes=cfg.num_classes, stage_sizes=(1, 1), width=4)
    want = plain.apply({"params": glancer, "batch_stats": variables["batch_stats"]["glancer"]},
                       resized.reshape(-1, g, g, 3))
    np.testing.assert_allclose(np.asarray(maps).reshape(want["feature_map"].shape),
                               want["feature_map"], rtol=1e-6, atol=1e-6)
    logits = model.apply(variables, frames, method=model.glancer_logits)
    assert logits.shape == (2, cfg.num_classes)
    cfg.glancer.arch = "vit"
    with pytest.raises(ValueError, match="glancer.arch: unknown 'vit'"):
        models.init_variables(models.create_model(cfg), jax.random.key(0))


def test_bad_inputs_name_the_problem():
    cfg = models.tiny_model_config("sthv2")
    model = models.create_model(cfg)
    variables = models.init_variables(model, jax.random.key(0))
    glance, focus = models.dummy_inputs(cfg, 1)
    with pytest.raises(ValueError, match="focus_frames must be"):
        model.apply(variables, glance, focus[:, :2])
    with pytest.raises(ValueError, match="patch_mode"):
        model.apply(variables, glance, focus, patch_mode="nope")
    bad = models.tiny_model_config("sthv2")
    bad.patch_size = 100
    with pytest.raises(ValueError, match="patch_size"):
        models.create_model(bad)
