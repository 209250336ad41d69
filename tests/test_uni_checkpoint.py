"""Released Uni-AdaFocus checkpoints, ActivityNet / FCVID / Mini-Kinetics layout (`actnet_p128`,
`fcvid_p128`, `minik_p128.pth.tar`): built from the plain-PyTorch reference with the official
names (tests/torch_reference_uni.py), saved with torch.save, read with the safe loader, converted,
and compared with the reference's test-time forward pass."""

import copy
import functools
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adafocus_jax import convert, crop as crop_lib, models
from adafocus_jax.models import uni as uni_models
from train_helpers import tiny_config

torch = pytest.importorskip("torch")
import torch_reference as tr  # noqa: E402
import torch_reference_uni as tru  # noqa: E402

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)


def small_uni_config(dataset: str = "actnet"):
    """configs/tiny.py:DATASET,mode=uni (12 candidates, 6 glanced, 4 chosen; tiny widths;
    "sthv2": the TSM variant) at 128² frames, so the glance map is 4×4 (the proxy crop reads 2×2
    cells of it) and a 1 × 4 × 4 conv (TSM: 6 × 4 × 4) ends the spatial policy; patch 64, boxes
    56…128 px (the official 96…224 scaled by 128 / 224)."""
    config = tiny_config(f"{dataset},mode=uni")
    c = config.model
    c.input_size = c.glance_size = config.data.input_size = 128
    c.patch_size = 64
    c.policy.side_range = (56.0, 128.0)
    c.policy.spatial_hidden = c.policy.temporal_hidden = 8
    return config


# The released file names the references stand in for.
FILE_NAMES = {"actnet": "actnet_p128.pth.tar", "sthv2": "sthv2_p128_8and16.pth.tar"}


@functools.lru_cache(maxsize=None)
def _reference_file(directory: str, dataset: str = "actnet"):
    """(config, reference, path of its checkpoint) — cached: the reference is built once."""
    config = small_uni_config(dataset)
    reference = tru.build_uni(config.model, seed=5)
    path = os.path.join(directory, FILE_NAMES[dataset])
    torch.save(tru.uni_file(reference), path)
    return config, reference, path


@pytest.fixture(scope="module")
def uni_file(tmp_path_factory):
    return _reference_file(str(tmp_path_factory.mktemp("uni_ckpt")))


@pytest.fixture(scope="module")
def uni_tsm_file(tmp_path_factory):
    return _reference_file(str(tmp_path_factory.mktemp("uni_tsm_ckpt")), "sthv2")


def _frames(config, seed=7, batch=2):
    """NCHW videos `[B, N, 3, S, S]` of the N candidates, and (TSM) `[B, G, 3, S, S]` glance
    frames before them: the model's inputs."""
    c = config.model
    gen = torch.Generator().manual_seed(seed)
    glance = [] if c.policy.per_frame else \
        [tr.random_frames(batch, c.num_glance_frames, c.input_size, gen)]
    return glance + [tr.random_frames(batch, c.num_candidate_frames, c.input_size, gen)]


def _glance_and_proxy(module, frames, candidates=None):
    """The test-time glance logits `[B, G, C]` and the spatial proxy's logits `[B, C]`."""
    cfg = module.config
    if module.tsm:     # the glance frames are given
        glance = module.glance_v2(frames)
    else:
        g_idx = uni_models.glance_indices(cfg.num_candidate_frames, cfg.num_glance_frames,
                                          frames.shape[0])
        glance = module.glance_v2(uni_models.take_frames(frames, g_idx))
    actions = module.policy.locate(glance["maps"])
    return glance["logits"], module.policy.proxy_logits(glance["maps"], actions, cfg.patch_size,
                                                        cfg.input_size)


def _relative(got, want) -> float:
    want = np.asarray(want, np.float64)
    return float(np.abs(np.asarray(got, np.float64) - want).max() / np.abs(want).max())


# Bounds per (variant, dtype), measured on the small models, seed 5 (in the comments). float64
# on both sides compares the functions: what is left is the float32 box arithmetic
# (`crop.uni_boxes`, float32 as in the official code) and the float32 temporal policy. In
# float32 the glance features differ by ~1e-5 of their scale (summation order, as in
# tests/test_parity.py); the spatial policy turns that into boxes ~6e-4 px apart, which moves
# the local features by ~6e-4 of their scale.
BOUNDS = {
    # (variant, dtype): (weights abs, box px, logits / steps / local features relative), measured:
    ("actnet", "float64"): (1e-6, 1e-5, 1e-4),  # 3.0e-8, 5.7e-6 px, 2.3e-6 / 1.7e-6 / 8.9e-6
    ("actnet", "float32"): (2e-5, 2e-3, 2e-3),  # 5.5e-6, 6.0e-4 px, 3.3e-4 / 1.7e-4 / 5.7e-4
    ("sthv2", "float64"): (1e-6, 1e-5, 1e-4),   # 4.7e-8, 4.9e-6 px, 1.4e-6 / 1.4e-6 / 4.0e-6
    ("sthv2", "float32"): (5e-5, 2e-3, 1e-3),   # 1.0e-5, 4.3e-4 px, 8.8e-5 / 8.8e-5 / 2.5e-4
}


def _both_sides(config, reference, variables, dtype, torch_inputs):
    """Runs the reference and the converted model, both in `dtype`, on the NCHW videos
    `torch_inputs` (ActivityNet family: the candidates; TSM: glance frames and candidates).

    Returns (the reference's outputs as numpy, the model's `AdaFocusOutput`, its glance logits
    `[B, G, C]` and proxy logits `[B, C]`, its boxes' top-left and sides `[B, St, 2]`)."""
    c = config.model.copy_and_resolve_references()
    c.dtype = dtype
    if dtype == "float64":
        reference = copy.deepcopy(reference).double()
        torch_inputs = [x.double() for x in torch_inputs]
    with torch.no_grad():
        want = {k: v.numpy() for k, v in reference(*torch_inputs).items()}
    with jax.enable_x64(dtype == "float64"):
        xs = [jnp.asarray(x.permute(0, 1, 3, 4, 2).numpy()) for x in torch_inputs]
        model = models.create_model(c)
        variables = jax.tree.map(lambda a: np.asarray(a, dtype), variables)
        out, (glance_logits, proxy_logits) = jax.jit(lambda v, *x: (
            model.apply(v, *x), model.apply(v, *x, method=_glance_and_proxy)))(variables, *xs)
        top, side = crop_lib.uni_boxes(out.actions, c.input_size, c.patch_size, c.patch_size,
                                       tuple(c.policy.side_range))
    return want, out, glance_logits, proxy_logits, top, side


def _check_parity(config, bounds, want, out, glance_logits, proxy_logits, top, side):
    c = config.model
    weights_atol, box_px, rel = bounds
    # Which frames: identical, and really chosen by the policy (not the uniform choice).
    np.testing.assert_array_equal(out.frame_indices, want["frame_indices"])
    uniform = np.asarray(uni_models.glance_indices(c.num_candidate_frames, c.num_focus_frames, 1))
    assert any((row != uniform[0]).any() for row in want["frame_indices"])
    assert (want["frame_indices"][0] != want["frame_indices"][1]).any()
    np.testing.assert_allclose(out.dist_params, want["weights"], atol=weights_atol)
    # Where: the boxes (top-left and sides, frame pixels), and the integer offsets.
    np.testing.assert_allclose(top, want["top_left"], atol=box_px)
    np.testing.assert_allclose(side, want["side"], atol=box_px)
    np.testing.assert_array_equal(out.patch_offsets, np.floor(want["top_left"]))
    assert np.ptp(want["top_left"]) > 4.0 and np.ptp(want["side"]) > 4.0   # boxes differ
    # What: every exit, the prediction, the local features, the glance head and the spatial
    # proxy head (aux_fc; not part of the prediction, so checked on its own).
    assert _relative(out.logits, want["logits"]) <= rel
    assert _relative(out.step_logits, want["step_logits"]) <= rel
    assert _relative(out.local_features, want["local_features"]) <= rel
    assert _relative(glance_logits, want["global_logits"]) <= 1e-4
    assert _relative(proxy_logits, want["spatial_logits"]) <= 1e-4


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_uni_checkpoint_converts_and_matches_torch_reference(uni_file, dtype):
    config, reference, path = uni_file
    info = convert.inspect_torch_checkpoint(path)
    assert (info.kind, info.family, info.modules) == ("uni_actnet", "actnet", convert.MODULES)
    assert info.stage == "Uni-AdaFocus (one stage)" and info.metadata["epoch"] == 50
    variables = convert.load_variables(path, config)      # the safe reader, then the converter
    _check_parity(config, BOUNDS["actnet", dtype],
                  *_both_sides(config, reference, variables, dtype, _frames(config)))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_uni_tsm_checkpoint_converts_and_matches_torch_reference(uni_tsm_file, dtype):
    config, reference, path = uni_tsm_file
    info = convert.inspect_torch_checkpoint(path)
    assert (info.kind, info.family) == ("uni_sthsth", "sthsth")
    assert info.modules == ("glancer", "focuser", "policy")      # the logit sum has no weights
    assert info.metadata["arch"] == "resnet50" and info.metadata["best_prec1"] == 64.2
    variables = convert.load_variables(path, config)
    assert "classifier" not in variables["params"]
    c = config.model
    want, out, *rest = _both_sides(config, reference, variables, dtype, _frames(config))
    assert out.actions.shape == (2, 1, 4) and out.step_logits.shape == (2, 2, c.num_classes)
    _check_parity(config, BOUNDS["sthv2", dtype], want, out, *rest)


def _edited(path, tmp_path, edit):
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    edit(ckpt["state_dict"])
    out = str(tmp_path / "edited.pth.tar")
    torch.save(ckpt, out)
    return out


def test_uni_checkpoint_errors_name_the_key(uni_file, tmp_path):
    config, _, path = uni_file
    key = "module.spatial_policy.encoder.3.weight"
    missing = _edited(path, tmp_path, lambda s: s.pop(key))
    with pytest.raises(convert.CheckpointError, match=f"missing key '{key}'"):
        convert.load_torch_checkpoint(missing, config)
    extra = "module.temporal_policy.Tconv.8.weight"
    unexpected = _edited(path, tmp_path, lambda s: s.update({extra: torch.zeros(3)}))
    with pytest.raises(convert.CheckpointError, match=f"unexpected key.*'{extra}'"):
        convert.load_torch_checkpoint(unexpected, config)
    stray = _edited(path, tmp_path, lambda s: s.update({"module.stn.weight": torch.zeros(3)}))
    with pytest.raises(convert.CheckpointError, match="unexpected key 'module.stn.weight'"):
        convert.load_torch_checkpoint(stray, config)
    wider = config.model.copy_and_resolve_references()
    wider.policy.temporal_hidden = 16
    with pytest.raises(convert.CheckpointError,
                       match=r"shape mismatch for 'module.temporal_policy.Tconv.0.weight'.*"
                             r"policy/temporal/conv0/kernel"):
        convert.load_torch_checkpoint(path, wider)
    fewer = config.model.copy_and_resolve_references()
    fewer.num_focus_frames = 3
    with pytest.raises(convert.CheckpointError,
                       match="'module.classifier.local_classifiers.3.1.weight'"):
        convert.load_torch_checkpoint(path, fewer)
    # A Uni file with a V2 config, and a V2 file with a Uni config: the message says which.
    v2 = models.to_v2_model_config(models.tiny_model_config("actnet"))
    with pytest.raises(convert.CheckpointError, match="Uni-AdaFocus checkpoint.*mode=uni"):
        convert.load_torch_checkpoint(path, v2)
    v2_path = str(tmp_path / "v2.pth.tar")
    torch.save(tr.v2_file(tr.ANetAdaFocusV2(v2)), v2_path)
    with pytest.raises(convert.CheckpointError, match="AdaFocusV2 checkpoint.*mode=v2"):
        convert.load_torch_checkpoint(v2_path, config)
    # Without the DDP prefix (a state dict saved from the bare model) the layout is the same.
    bare = _edited(path, tmp_path, lambda s: s.update(
        {k[len("module."):]: s.pop(k) for k in list(s)}))
    assert convert.inspect_torch_checkpoint(bare).kind == "uni_actnet"
    one = convert.load_torch_checkpoint(bare, config, parts=["policy"], allow_partial=True)
    np.testing.assert_array_equal(
        one["params"]["policy"]["aux_fc"]["kernel"],
        torch.load(path, weights_only=True)["state_dict"]["module.aux_fc.weight"].numpy().T)


def test_uni_tsm_checkpoint_errors(uni_tsm_file, uni_file, tmp_path):
    config, _, path = uni_tsm_file
    key = "module.local_CNN.new_new_fc.weight"
    missing = _edited(path, tmp_path, lambda s: s.pop(key))
    with pytest.raises(convert.CheckpointError, match=f"missing key '{key}'"):
        convert.load_torch_checkpoint(missing, config)
    # The TSM layout has no classifier: an exit-classifier key is one no rule knows.
    extra = "module.classifier.global_mlp.layers.0.weight"
    stray = _edited(path, tmp_path, lambda s: s.update({extra: torch.zeros(3)}))
    with pytest.raises(convert.CheckpointError,
                       match=f"unexpected key '{extra}'.*Uni-AdaFocus-TSM"):
        convert.load_torch_checkpoint(stray, config)
    # The spatial policy's last conv spans the G glance maps: a config with fewer frames.
    fewer = config.model.copy_and_resolve_references()
    fewer.num_glance_frames = 4
    with pytest.raises(convert.CheckpointError,
                       match=r"shape mismatch for 'module.spatial_policy.encoder.9.weight'"):
        convert.load_torch_checkpoint(path, fewer, parts=["policy"], allow_partial=True)
    # Each Uni family with the other's config, and a V2 Sth-Sth file with the Uni-TSM config.
    anet_config = uni_file[0]
    with pytest.raises(convert.CheckpointError, match="wrong architecture: a Uni-AdaFocus "
                       "Something-Something.*checkpoint, but config.model describes the Activity"):
        convert.load_torch_checkpoint(path, anet_config)
    with pytest.raises(convert.CheckpointError, match="wrong architecture: a Uni-AdaFocus "
                       "ActivityNet.*checkpoint, but config.model describes the Something"):
        convert.load_torch_checkpoint(uni_file[2], config)
    v2 = models.to_v2_model_config(models.tiny_model_config("sthv2"))
    v2_path = str(tmp_path / "v2_sth.pth.tar")
    torch.save(tr.v2_file(tr.SthSthAdaFocusV2(v2)), v2_path)
    with pytest.raises(convert.CheckpointError, match="AdaFocusV2 checkpoint.*mode=v2"):
        convert.load_torch_checkpoint(v2_path, config)
    # The glancer's temporal shift against the config's.
    unshifted = config.model.copy_and_resolve_references()
    unshifted.glancer.temporal_shift = False
    with pytest.raises(convert.CheckpointError, match="glancer has temporal shift"):
        convert.load_torch_checkpoint(path, unshifted)


def test_uni_checkpoint_cli_round_trip(uni_file, tmp_path):
    """tools/convert_checkpoint on the Uni file → Orbax directory → the same variables."""
    config, _, path = uni_file
    config_file = tmp_path / "small_uni.py"
    config_file.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {TESTS!r})
        from test_uni_checkpoint import small_uni_config

        def get_config(arg=None):
            return small_uni_config()
    """))
    out_dir = tmp_path / "converted"
    result = subprocess.run(
        [sys.executable, "-m", "adafocus_jax.tools.convert_checkpoint", f"--config={config_file}",
         f"--torch_checkpoint={path}", f"--output_dir={out_dir}"],
        capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "kind uni_actnet (Uni-AdaFocus (one stage))" in result.stdout
    restored = convert.load_variables(str(out_dir))
    direct = convert.load_torch_checkpoint(path, config)
    assert jax.tree.structure(restored) == jax.tree.structure(direct)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(direct)):
        np.testing.assert_array_equal(a, b)


def test_uni_full_size_checkpoint_layout(tmp_path):
    """The full-size ActivityNet P = 128 layout (200 classes, 16 + 16 exits, the 1 × 7 × 7 spatial
    conv, 8192-wide local heads): every key of the file is converted or is one of the two dropped
    ImageNet heads, and the values land transposed where they belong. (Numerics at full size:
    the backbones in tests/test_parity.py; the composed model above at a small size.)"""
    c = models.uni_model_config("actnet", 128)
    torch.manual_seed(0)
    reference = tru.UniAdaFocusANet(c)
    path = str(tmp_path / "actnet_p128.pth.tar")
    torch.save(tru.uni_file(reference), path)
    variables = convert.load_torch_checkpoint(path, c)
    state = reference.state_dict()
    dropped = [k for k in state if k.startswith(("global_CNN.classifier.", "local_CNN.fc."))]
    assert sorted(dropped) == ["global_CNN.classifier.bias", "global_CNN.classifier.weight",
                               "local_CNN.fc.bias", "local_CNN.fc.weight"]
    torch_count = sum(v.numel() for k, v in state.items()
                      if k not in dropped and not k.endswith("num_batches_tracked"))
    counts = convert.count_parameters(variables)
    assert sum(n["params"] + n["batch_stats"] for n in counts.values()) == torch_count
    params = variables["params"]
    spatial_out = state["spatial_policy.encoder.9.weight"].numpy()            # [4, 128, 1, 7, 7]
    np.testing.assert_array_equal(params["policy"]["spatial"]["out"]["kernel"],
                                  spatial_out.transpose(2, 3, 4, 1, 0))
    temporal = state["temporal_policy.Tconv.0.weight"].numpy()                # [64, 1280, 3, 1]
    np.testing.assert_array_equal(params["policy"]["temporal"]["conv0"]["kernel"],
                                  temporal[..., 0].transpose(2, 1, 0))
    np.testing.assert_array_equal(params["classifier"]["local_head15"]["kernel"],
                                  state["classifier.local_classifiers.15.1.weight"].numpy().T)
    np.testing.assert_array_equal(params["glancer"]["classifier"]["bias"],
                                  state["global_CNN_fc.1.bias"].numpy())
    np.testing.assert_array_equal(
        variables["batch_stats"]["policy"]["spatial"]["bn2"]["var"],
        state["spatial_policy.encoder.7.running_var"].numpy())


def test_uni_tsm_full_size_checkpoint_layout(tmp_path):
    """The full-size `sthv2_p128_8and16.pth.tar` layout (174 classes, 8 TSM glance frames, 16 of
    48 candidates, the 8 × 7 × 7 spatial conv; the TSNs' heads are Dropouts, so nothing is
    dropped): every key of the file is converted, and the values land transposed where they
    belong. (Numerics: the composed model above at a small size.)"""
    c = models.uni_model_config("sthv2", 128, 0.5, 16)
    torch.manual_seed(0)
    reference = tru.UniAdaFocusTSM(c)
    path = str(tmp_path / "sthv2_p128_8and16.pth.tar")
    torch.save(tru.uni_file(reference), path)
    variables = convert.load_torch_checkpoint(path, c)
    state = reference.state_dict()
    torch_count = sum(v.numel() for k, v in state.items() if not k.endswith("num_batches_tracked"))
    counts = convert.count_parameters(variables)
    assert sorted(counts) == ["focuser", "glancer", "policy"]
    assert sum(n["params"] + n["batch_stats"] for n in counts.values()) == torch_count
    params = variables["params"]
    spatial_out = state["spatial_policy.encoder.9.weight"].numpy()            # [4, 128, 8, 7, 7]
    assert spatial_out.shape == (4, 128, 8, 7, 7)
    np.testing.assert_array_equal(params["policy"]["spatial"]["out"]["kernel"],
                                  spatial_out.transpose(2, 3, 4, 1, 0))
    shifted = state["global_CNN.base_model.features.3.conv.0.net.weight"].numpy()  # [144, 24, 1, 1]
    np.testing.assert_array_equal(params["glancer"]["block3"]["expand_conv"]["kernel"],
                                  shifted.transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(params["focuser"]["layer4_2"]["conv1"]["kernel"],
                                  state["local_CNN.base_model.layer4.2.conv1.net.weight"].numpy()
                                  .transpose(2, 3, 1, 0))
    for module, name, head in (("glancer", "classifier", "global_CNN.new_fc"),
                               ("glancer", "reg_classifier", "global_CNN.new_new_fc"),
                               ("focuser", "fc", "local_CNN.new_fc"),
                               ("focuser", "reg_fc", "local_CNN.new_new_fc")):
        np.testing.assert_array_equal(params[module][name]["kernel"],
                                      state[f"{head}.weight"].numpy().T)
    np.testing.assert_array_equal(params["policy"]["aux_fc"]["bias"], state["aux_fc.bias"].numpy())
    np.testing.assert_array_equal(
        variables["batch_stats"]["policy"]["temporal"]["bn1"]["mean"],
        state["temporal_policy.Tconv.4.running_mean"].numpy())
