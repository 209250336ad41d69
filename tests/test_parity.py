"""Numerical parity of the Flax networks with the plain-PyTorch reference (`torch_reference.py`).

Each reference model gets random weights and calibrated, randomised BatchNorm statistics, is saved
in an official file layout, converted with `adafocus_jax.convert`, and run on the same inputs as the
Flax model. Criterion: float32 max |diff| ≤ 1e-4 × the output's scale (max |value|, at least 1),
and identical patch offsets (3e-4 for the per-pixel feature map of the full-size glancer). Every
test prints its measured max |diff| (`pytest -s` shows them).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch_reference as tr  # noqa: E402

from adafocus_jax import convert, models  # noqa: E402

RTOL = 1e-4


def nhwc(x: "torch.Tensor") -> jnp.ndarray:
    """`[..., C, H, W]` torch → `[..., H, W, C]` jax."""
    return jnp.asarray(np.moveaxis(x.detach().numpy(), -3, -1))


def assert_close(name: str, ref, got, rtol: float = RTOL) -> float:
    """Asserts max |ref − got| ≤ rtol · max(1, max |ref|); returns (and prints) the max diff."""
    ref = ref.detach().numpy() if hasattr(ref, "detach") else np.asarray(ref)
    got = np.asarray(got)
    assert ref.shape == got.shape, (name, ref.shape, got.shape)
    diff = float(np.max(np.abs(ref - got)))
    scale = max(1.0, float(np.max(np.abs(ref))))
    print(f"parity {name}: max|diff| {diff:.3g} (scale {scale:.3g})")
    assert diff <= rtol * scale, f"{name}: max |diff| {diff} > {rtol} × {scale}"
    return diff


class Converted:
    """A reference model, its converted variables and the Flax model of the same config."""

    def __init__(self, config, reference, variables):
        self.config, self.ref, self.variables = config, reference, variables
        self.model = models.create_model(config)

    def apply(self, *args, method=None, **kwargs):
        fn = jax.jit(lambda v, *a: self.model.apply(v, *a, method=method, **kwargs))
        return fn(self.variables, *args)


def _convert(tmp_path_factory, name, reference, file_dict, config) -> Converted:
    path = str(tmp_path_factory.mktemp(name) / f"{name}.pth.tar")
    torch.save(file_dict, path)
    return Converted(config, reference, convert.load_torch_checkpoint(path, config))


@pytest.fixture(scope="module")
def sth(tmp_path_factory):
    config = models.tiny_model_config("sthv2")
    reference = tr.build_sthsth(config, seed=0)
    return _convert(tmp_path_factory, "sth", reference, tr.sthsth_file(reference, 3), config)


@pytest.fixture(scope="module")
def anet(tmp_path_factory):
    config = models.tiny_model_config("actnet")
    reference = tr.build_anet(config, seed=0)
    return _convert(tmp_path_factory, "anet", reference, tr.anet_file(reference, True), config)


def _frames(batch, frames, size, seed):
    return tr.random_frames(batch, frames, size, torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------------------------------
# Modules one by one.


@pytest.mark.parametrize("family", ["sth", "anet"])
def test_glancer(family, request):
    """TSM layout (Sth-Sth: shift in blocks 3,5,6,...; own logits) and torchvision layout (ANet:
    pooled feature; head only for stage 0)."""
    c = request.getfixturevalue(family)
    frames = _frames(3, c.config.num_glance_frames, c.config.input_size, seed=1)
    b, t = frames.shape[:2]
    with torch.no_grad():
        ref_map, ref_out = c.ref.glancer.get_featmap(frames.flatten(0, 1))
        ref_head = c.ref.glancer.net(frames.flatten(0, 1)).reshape(b, t, -1).mean(1)
    maps, out = c.apply(nhwc(frames), method=c.model.glance)
    assert_close(f"{family} glancer feature map", nhwc(ref_map).reshape(maps.shape), maps)
    assert_close(f"{family} glancer {'logits' if family == 'sth' else 'pooled'}",
                 ref_out.reshape(out.shape), out)
    head = c.apply(nhwc(frames), method=c.model.glancer_logits)
    assert_close(f"{family} glancer head (stage-0 logits)", ref_head, head)


@pytest.mark.parametrize("family", ["sth", "anet"])
def test_focuser(family, request):
    """TSM ResNet behind the truncated TSN (Sth-Sth) and plain ResNet with `fc` (ANet)."""
    c = request.getfixturevalue(family)
    p = c.config.patch_size
    patches = _frames(2, c.config.num_focus_frames, p, seed=2)
    with torch.no_grad():
        ref = c.ref.focuser(patches.flatten(0, 1)).reshape(2, c.config.num_focus_frames, -1)
    got = c.apply(nhwc(patches), method=c.model.local_features)
    assert_close(f"{family} focuser pooled features", ref, got)
    if family == "anet":  # stage-0 head on whole frames
        frames = _frames(2, c.config.num_focus_frames, c.config.input_size, seed=3)
        with torch.no_grad():
            ref_logits = c.ref.focuser.net(frames.flatten(0, 1)).reshape(2, -1, 5).mean(1)
        logits = c.apply(nhwc(frames), method=c.model.focuser_logits)
        assert_close("anet focuser fc (stage-0 logits)", ref_logits, logits)


def test_policy_gaussian(sth):
    """Sth-Sth policy (conv+BN encoder, one GRU step): Gaussian mean and value."""
    cfg = sth.config
    g = torch.Generator().manual_seed(4)
    channels = cfg.num_glance_frames * cfg.glancer.last_channel
    states = torch.rand(5, channels, 2, 2, generator=g) * 3  # post-ReLU6-like glance maps
    with torch.no_grad():
        mean, value, _ = sth.ref.policy.step(states)
    got_mean, got_value = sth.apply(nhwc(states)[:, None], method=sth.model.policy_forward)
    assert_close("sth policy mean", mean, got_mean[:, 0])
    assert_close("sth policy value", value, got_value[:, 0])
    span = cfg.input_size - cfg.patch_size
    np.testing.assert_array_equal(tr.patch_offsets(mean, cfg.input_size, cfg.patch_size).numpy(),
                                  sth.model.apply(sth.variables, got_mean[:, 0],
                                                  method=sth.model.action_offsets))
    assert len({tuple(o) for o in np.floor(mean.numpy() * span).tolist()}) > 1


def test_policy_categorical(anet):
    """ANet policy (conv encoder without BN, GRU carried over the frames): probabilities, values."""
    cfg = anet.config
    g = torch.Generator().manual_seed(5)
    states = torch.rand(3, cfg.num_glance_frames, cfg.glancer.last_channel, 2, 2, generator=g) * 3
    probs, values, hidden = [], [], None
    with torch.no_grad():
        for t in range(states.shape[1]):
            p, v, hidden = anet.ref.policy.step(states[:, t], hidden)
            probs.append(p)
            values.append(v)
    logits, got_values = anet.apply(nhwc(states), method=anet.model.policy_forward)
    assert_close("anet policy probabilities", torch.stack(probs, 1), jax.nn.softmax(logits))
    assert_close("anet policy values", torch.stack(values, 1), got_values)
    np.testing.assert_array_equal(torch.stack(probs, 1).argmax(-1).numpy(), np.argmax(logits, -1))


def test_classifier_logit_sum(sth):
    cfg = sth.config
    g = torch.Generator().manual_seed(6)
    glance_logits = torch.randn(3, cfg.num_glance_frames, cfg.num_classes, generator=g)
    local = torch.rand(3, cfg.num_focus_frames, sth.ref.focuser.num_features, generator=g) * 2
    with torch.no_grad():
        ref = sth.ref.fc(local).mean(1) + glance_logits.mean(1)
    logits, step_logits = sth.apply(jnp.asarray(glance_logits.numpy()),
                                    jnp.asarray(local.numpy()), method=sth.model.classify)
    assert_close("sth logit-sum classifier", ref, logits)
    assert step_logits.shape == (3, 1, cfg.num_classes)


def test_classifier_gru(anet):
    cfg = anet.config
    g = torch.Generator().manual_seed(7)
    glance = torch.rand(3, cfg.num_glance_frames, cfg.glancer.last_channel, generator=g) * 2
    local = torch.rand(3, cfg.num_focus_frames, anet.ref.focuser.num_features, generator=g) * 2
    with torch.no_grad():
        ref_steps, ref_last = anet.ref.fc(torch.cat([glance, local], dim=2))
    logits, step_logits = anet.apply(jnp.asarray(glance.numpy()), jnp.asarray(local.numpy()),
                                     method=anet.model.classify)
    assert_close("anet GRU classifier step logits", ref_steps, step_logits)
    assert_close("anet GRU classifier last-step logits", ref_last, logits)


# --------------------------------------------------------------------------------------------------
# Whole models.


def _check_sthsth(c: Converted, batch: int, seed: int, label: str):
    cfg = c.config
    glance = _frames(batch, cfg.num_glance_frames, cfg.input_size, seed)
    focus = _frames(batch, cfg.num_focus_frames, cfg.input_size, seed + 100)
    ref = c.ref(glance, focus)
    out = c.apply(nhwc(glance), nhwc(focus))
    np.testing.assert_array_equal(ref["patch_offsets"].numpy(), np.asarray(out.patch_offsets))
    diff = assert_close(f"{label} logits", ref["logits"], out.logits)
    assert_close(f"{label} glance logits", ref["glance_logits"], out.glance_out)
    return ref, out, diff


def test_sthsth_model(sth):
    ref, out, _ = _check_sthsth(sth, batch=4, seed=10, label="sth tiny model")
    # The inputs are informative: the videos get different patch locations.
    assert len({tuple(o) for o in np.asarray(out.patch_offsets)[:, 0].tolist()}) > 1
    assert float(np.std(np.asarray(out.logits))) > 0.1


def test_anet_model(anet):
    cfg = anet.config
    frames = _frames(4, cfg.num_glance_frames, cfg.input_size, seed=11)
    ref = anet.ref(frames)
    out = anet.apply(nhwc(frames))
    np.testing.assert_array_equal(ref["patch_offsets"].numpy(), np.asarray(out.patch_offsets))
    assert len({tuple(o) for o in np.asarray(out.patch_offsets).reshape(-1, 2).tolist()}) > 1
    assert_close("anet tiny model last-step logits", ref["logits"], out.logits)
    assert_close("anet tiny model step logits", ref["step_logits"], out.step_logits)
    assert_close("anet tiny model policy probabilities", ref["probs"],
                 jax.nn.softmax(out.dist_params))


def test_full_size_sthsth_model(tmp_path_factory):
    """The released Sth-Sth network (TSM MobileNetV2 on 8 frames + TSM ResNet-50 on 12 patches of
    144², 174 classes), batch 1, through a stage-3 file."""
    config = models.default_model_config("sthv2", patch_size=144)
    reference = tr.build_sthsth(config, seed=3, calibration_batch=2)
    c = _convert(tmp_path_factory, "sth_full", reference, tr.sthsth_file(reference, 3), config)
    _check_sthsth(c, batch=1, seed=12, label="sth full-size model (P=144)")


def test_full_size_anet_backbones(tmp_path_factory):
    """The released ActivityNet backbones (torchvision MobileNetV2 at 224², ResNet-50 on 128²
    patches) through a stage-3 file, on one video of 2 frames (both run per frame, so 2 frames
    exercise exactly what 16 do)."""
    config = models.default_model_config("actnet", patch_size=128)
    gen = torch.Generator().manual_seed(8)
    torch.manual_seed(8)
    mobilenet = tr.MobileNetV2("torchvision", config.num_classes)
    focuser = tr.ANetFocuser(config.num_classes)
    frames = _frames(1, 2, 224, seed=13)
    patches = _frames(1, 2, 128, seed=14)
    # BN statistics of 8 random frames / patches (2 would leave near-constant channels).
    tr.calibrate_batch_norm(mobilenet, (_frames(1, 8, 224, seed=15)[0],), gen)
    tr.calibrate_batch_norm(focuser, (_frames(1, 8, 128, seed=16)[0],), gen)
    reference = tr.ANetAdaFocus(
        tr.Glancer(mobilenet), focuser, tr.RecurrentClassifier(num_classes=config.num_classes),
        tr.DiscreteActorCritic(), config.patch_size).eval()
    c = _convert(tmp_path_factory, "anet_full", reference, tr.anet_file(reference, True), config)
    with torch.no_grad():
        ref_map, ref_pooled = reference.glancer.get_featmap(frames[0])
        ref_local = reference.focuser(patches[0])
    maps, pooled = c.apply(nhwc(frames), method=c.model.glance)
    # Per-pixel maps of a 52-layer float32 network with random weights: rounding differences
    # between the two conv implementations grow to ~5e-5 × scale; pooled outputs stay at ~5e-6.
    assert_close("anet full-size glancer feature map", nhwc(ref_map)[None], maps, rtol=3e-4)
    assert_close("anet full-size glancer pooled", ref_pooled[None], pooled)
    local = c.apply(nhwc(patches), method=c.model.local_features)
    assert_close("anet full-size focuser pooled (P=128)", ref_local[None], local)
