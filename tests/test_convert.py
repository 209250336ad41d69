"""The PyTorch → Flax converter: every official file kind, its errors, Orbax storage and the CLI.

Files are built by `torch_reference` in the official layouts (spec §10.1) from tiny reference
models, saved with `torch.save`, converted, and the converted Flax model must give the torch model's
outputs. Numerical parity of each module is in `test_parity.py`.
"""

import copy
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch_reference as tr  # noqa: E402

from adafocus_jax import convert, models  # noqa: E402

ATOL = 1e-4  # tiny models: outputs are O(1)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def nhwc(x) -> jnp.ndarray:
    return jnp.asarray(np.moveaxis(x.detach().numpy(), -3, -1))


def close(ref, got, atol=ATOL):
    ref = ref.detach().numpy() if hasattr(ref, "detach") else np.asarray(ref)
    np.testing.assert_allclose(np.asarray(got), ref, rtol=0, atol=atol)


class Family:
    """A tiny reference model, inputs, its outputs, and a jitted Flax forward of the same config."""

    def __init__(self, dataset: str):
        self.config = models.tiny_model_config(dataset)
        c = self.config
        gen = torch.Generator().manual_seed(21)
        self.sth = dataset == "sthv2"
        if self.sth:
            self.ref = tr.build_sthsth(c, seed=1)
            self.glance = tr.random_frames(3, c.num_glance_frames, c.input_size, gen)
            self.focus = tr.random_frames(3, c.num_focus_frames, c.input_size, gen)
            self.out = self.ref(self.glance, self.focus)
        else:
            self.ref = tr.build_anet(c, seed=1)
            self.glance = self.focus = tr.random_frames(3, c.num_glance_frames, c.input_size, gen)
            self.out = self.ref(self.glance)
        self.model = models.create_model(c)
        self.fresh = models.init_variables(self.model, jax.random.key(7))
        self._apply = jax.jit(self.model.apply, static_argnames=("patch_mode",))

    def forward(self, variables, patch_mode="policy"):
        """Flax outputs on the reference inputs; "given" uses the reference's patch offsets."""
        offsets = jnp.asarray(self.out["patch_offsets"].numpy(), jnp.int32)
        return self._apply(variables, nhwc(self.glance), nhwc(self.focus), patch_mode=patch_mode,
                           patch_offsets=offsets if patch_mode == "given" else None)

    def check_logits(self, variables, patch_mode="policy"):
        out = self.forward(variables, patch_mode)
        np.testing.assert_array_equal(np.asarray(out.patch_offsets),
                                      self.out["patch_offsets"].numpy())
        close(self.out["logits"], out.logits)
        return out


@pytest.fixture(scope="module")
def sth():
    return Family("sthv2")


@pytest.fixture(scope="module")
def anet():
    return Family("actnet")


@pytest.fixture(scope="module")
def files(sth, anet, tmp_path_factory):
    """Every official file kind, saved with torch.save: {name: path}."""
    root = tmp_path_factory.mktemp("files")
    out = {}

    def save(name, obj):
        out[name] = str(root / name)
        torch.save(obj, out[name])

    for stage in (1, 2, 3):
        save(f"sth_stage{stage}.pth.tar", tr.sthsth_file(sth.ref, stage))
    save("144x144.pth.tar", tr.sthsth_file(sth.ref, 3))
    save("globalcnn.pth.tar", tr.anet_file(anet.ref, with_policy=False))
    save("128checkpoint.pth.tar", tr.anet_file(anet.ref, with_policy=False))
    save("128s3_checkpoint.pth.tar", tr.anet_file(anet.ref, with_policy=True))
    # Only GFV's state dict: the policy then comes from focuser.policy.policy{,_old}.*.
    only_msd = tr.anet_file(anet.ref, with_policy=True)
    for key in ("glancer", "focuser", "fc", "policy"):
        only_msd[key] = None
    save("anet_model_state_dict_only.pth.tar", only_msd)

    # TSM pre-training files: the glancer MobileNetV2 (head → new_fc) and an unsplit TSM ResNet.
    backbone = copy.deepcopy(sth.ref.glancer.net)
    new_fc = backbone.classifier
    del backbone.classifier
    save("mobilenetv2_segment8.pth.tar", tr.tsm_pretrained_file(backbone, new_fc, "mobilenetv2"))
    c = sth.config
    gen = torch.Generator().manual_seed(3)
    resnet = tr.ResNet(None, c.focuser.width, tuple(c.focuser.stage_sizes), c.num_focus_frames)
    patches = tr.random_frames(2, c.num_focus_frames, c.patch_size, gen)
    tr.calibrate_batch_norm(resnet, (patches.flatten(0, 1),), gen)
    resnet_fc = torch.nn.Linear(resnet.num_features, c.num_classes)
    save("resnet50_segment12.pth.tar", tr.tsm_pretrained_file(resnet, resnet_fc, "resnet50"))
    out["_tsm_resnet"] = (resnet, resnet_fc, patches)

    # torchvision ImageNet state dicts (1000-way heads), where ANet stage 0 starts.
    a = anet.config
    frames = tr.random_frames(2, 3, a.input_size, gen).flatten(0, 1)
    imagenet_mb = tr.calibrate_batch_norm(
        tr.MobileNetV2("torchvision", 1000, a.glancer.width_mult, a.glancer.last_channel),
        (frames,), gen)
    imagenet_rn = tr.calibrate_batch_norm(
        tr.ResNet(1000, a.focuser.width, tuple(a.focuser.stage_sizes)), (frames,), gen)
    save("mobilenet_v2-imagenet.pth", imagenet_mb.state_dict())
    save("resnet50-imagenet.pth", imagenet_rn.state_dict())
    out["_imagenet"] = (imagenet_mb, imagenet_rn, frames)
    return out


# --------------------------------------------------------------------------------------------------
# What a file holds.


@pytest.mark.parametrize("name,kind,modules,stage", [
    ("sth_stage1.pth.tar", "sthsth", ("glancer", "focuser", "classifier"), "stage 1"),
    ("sth_stage2.pth.tar", "sthsth", convert.MODULES, "stage 2"),
    ("144x144.pth.tar", "sthsth", convert.MODULES, "stage 3 (or stage 2 + optimizer)"),
    ("globalcnn.pth.tar", "actnet", ("glancer", "focuser", "classifier"), "stage 0/1"),
    ("128s3_checkpoint.pth.tar", "actnet", convert.MODULES, "stage 2/3"),
    ("anet_model_state_dict_only.pth.tar", "actnet", convert.MODULES, "stage 2/3"),
    ("mobilenetv2_segment8.pth.tar", "tsm_mobilenetv2", ("glancer",), "TSM pre-training"),
    ("resnet50_segment12.pth.tar", "tsm_resnet50", ("focuser", "classifier"), "TSM pre-training"),
    ("mobilenet_v2-imagenet.pth", "imagenet_mobilenetv2", ("glancer",), "ImageNet pre-training"),
    ("resnet50-imagenet.pth", "imagenet_resnet50", ("focuser",), "ImageNet pre-training"),
])
def test_inspect(files, name, kind, modules, stage):
    info = convert.inspect_torch_checkpoint(files[name])
    assert (info.kind, info.modules, info.stage) == (kind, tuple(modules), stage)
    if not kind.startswith("imagenet"):
        assert info.metadata["epoch"] in (10, 50)


# --------------------------------------------------------------------------------------------------
# Each file kind gives the torch model's outputs.


@pytest.mark.parametrize("name", ["sth_stage2.pth.tar", "144x144.pth.tar"])
def test_sthsth_full_files(sth, files, name):
    variables = convert.load_torch_checkpoint(files[name], sth.config)
    assert jax.tree.structure(variables) == jax.tree.structure(sth.fresh)
    for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(sth.fresh)):
        assert a.shape == b.shape and a.dtype == b.dtype
    sth.check_logits(variables)


def test_sthsth_stage1_merges_into_init(sth, files):
    """Stage-1 files have no policy: it comes from `init_variables`; the rest from the file."""
    variables = convert.load_torch_checkpoint(files["sth_stage1.pth.tar"], sth.config,
                                              init_variables=sth.fresh)
    for a, b in zip(jax.tree.leaves(variables["params"]["policy"]),
                    jax.tree.leaves(sth.fresh["params"]["policy"])):
        np.testing.assert_array_equal(a, b)
    sth.check_logits(variables, patch_mode="given")
    # Only some parts: the file's classifier is not taken.
    glancer_only = convert.load_torch_checkpoint(files["sth_stage1.pth.tar"], sth.config,
                                                 parts=["glancer"], allow_partial=True)
    assert set(glancer_only["params"]) == set(glancer_only["batch_stats"]) == {"glancer"}


@pytest.mark.parametrize("name", ["128s3_checkpoint.pth.tar", "anet_model_state_dict_only.pth.tar"])
def test_anet_full_files(anet, files, name):
    variables = convert.load_torch_checkpoint(files[name], anet.config)
    out = anet.check_logits(variables)
    close(anet.out["step_logits"], out.step_logits)


@pytest.mark.parametrize("name", ["globalcnn.pth.tar", "128checkpoint.pth.tar"])
def test_anet_stage0_stage1_files(anet, files, name):
    variables = convert.load_torch_checkpoint(files[name], anet.config,
                                              init_variables=anet.fresh)
    anet.check_logits(variables, patch_mode="given")


def test_tsm_mobilenetv2_file(sth, files):
    """TSM `mobilenetv2_segment8`: module.base_model.* → glancer, module.new_fc → its head."""
    variables = convert.load_torch_checkpoint(files["mobilenetv2_segment8.pth.tar"], sth.config,
                                              allow_partial=True)
    assert set(variables["params"]) == {"glancer"}
    full = convert.merge_modules(sth.fresh, variables)
    _, logits = sth.model.apply(full, nhwc(sth.glance), method=sth.model.glance)
    close(sth.out["glance_logits"], logits)


def test_tsm_resnet50_file(sth, files):
    """TSM `resnet50_segment12`: module.base_model.* (untruncated names) → focuser, new_fc →
    the classifier's fc."""
    resnet, resnet_fc, patches = files["_tsm_resnet"]
    variables = convert.load_torch_checkpoint(files["resnet50_segment12.pth.tar"], sth.config,
                                              init_variables=sth.fresh)
    model = sth.model
    with torch.no_grad():
        ref = torch.flatten(resnet.get_featmap(patches.flatten(0, 1)), 1)
        ref = ref.reshape(2, sth.config.num_focus_frames, -1)
        ref_logits = resnet_fc(ref)
    features = model.apply(variables, nhwc(patches), method=model.local_features)
    close(ref, features, atol=1e-4 * max(1.0, float(ref.abs().max())))
    logits = model.apply(variables, features, method=lambda m, x: m.classifier.fc(x))
    close(ref_logits, logits)
    with pytest.raises(convert.CheckpointError, match="has no glancer"):
        convert.load_torch_checkpoint(files["resnet50_segment12.pth.tar"], sth.config,
                                      parts=["glancer"])


def test_imagenet_files(anet, files):
    """torchvision ImageNet backbones: the body converts, the 1000-way head is re-initialised."""
    mobilenet, resnet, frames = files["_imagenet"]
    model = anet.model
    glancer = convert.load_torch_checkpoint(files["mobilenet_v2-imagenet.pth"], anet.config,
                                            init_variables=anet.fresh, head_seed=3)
    focuser = convert.load_torch_checkpoint(files["resnet50-imagenet.pth"], anet.config,
                                            init_variables=anet.fresh, head_seed=3)
    x = nhwc(frames.reshape(2, 3, *frames.shape[1:]))
    with torch.no_grad():
        ref_map, ref_pooled = mobilenet.get_featmap(frames)
        ref_local = torch.flatten(resnet.get_featmap(frames), 1)
    maps, pooled = model.apply(glancer, x, method=model.glance)
    # Within 1e-4 of the outputs' scale, as every parity check (the depthwise convolutions sum
    # their nine taps in another order than oneDNN: ~1e-4 absolute on glance maps of scale ~5).
    close(ref_pooled.reshape(pooled.shape), pooled,
          atol=1e-4 * max(1.0, float(ref_pooled.abs().max())))
    close(nhwc(ref_map).reshape(maps.shape), maps,
          atol=1e-4 * max(1.0, float(ref_map.abs().max())))
    local = model.apply(focuser, x, method=model.local_features)
    close(ref_local.reshape(local.shape), local, atol=1e-4 * max(1.0, float(ref_local.abs().max())))
    head = glancer["params"]["glancer"]["classifier"]
    assert head["kernel"].shape == (anet.config.glancer.last_channel, anet.config.num_classes)
    np.testing.assert_array_equal(head["bias"], 0)
    assert float(np.std(head["kernel"])) > 0
    with pytest.raises(convert.CheckpointError, match="wrong architecture"):
        convert.load_torch_checkpoint(files["mobilenet_v2-imagenet.pth"],
                                      models.tiny_model_config("sthv2"), allow_partial=True)


# --------------------------------------------------------------------------------------------------
# Errors.


def _modified(files, name, tmp_path, edit):
    obj = torch.load(files[name], map_location="cpu", weights_only=True)
    edit(obj)
    path = str(tmp_path / f"modified_{name}")
    torch.save(obj, path)
    return path


def test_truncated_file(sth, files, tmp_path):
    data = open(files["144x144.pth.tar"], "rb").read()
    path = tmp_path / "truncated.pth.tar"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(convert.CheckpointError, match="truncated or corrupt"):
        convert.load_torch_checkpoint(str(path), sth.config)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        convert.load_torch_checkpoint(str(tmp_path / "nope.pth.tar"), sth.config)


def test_wrong_architecture(sth, anet, files):
    with pytest.raises(convert.CheckpointError, match=r"wrong architecture.*ActivityNet"):
        convert.load_torch_checkpoint(files["128s3_checkpoint.pth.tar"], sth.config)
    with pytest.raises(convert.CheckpointError, match=r"wrong architecture.*Something"):
        convert.load_torch_checkpoint(files["resnet50_segment12.pth.tar"], anet.config,
                                      allow_partial=True)
    # Same family, other size: the first differing tensor is named.
    big = models.tiny_model_config("sthv2")
    big.num_classes = 7
    with pytest.raises(convert.CheckpointError,
                       match=r"shape mismatch for 'net.classifier.weight'"):
        convert.load_torch_checkpoint(files["144x144.pth.tar"], big)
    # A ResNet glance network (configs/custom.py's small preset) has no official weights.
    resnet_glance = models.tiny_model_config("sthv2")
    resnet_glance.glancer.arch = "resnet"
    with pytest.raises(convert.CheckpointError, match=r"MobileNetV2 glance network.*'resnet'"):
        convert.load_torch_checkpoint(files["144x144.pth.tar"], resnet_glance)


def test_missing_key(sth, files, tmp_path):
    key = "net.base_model.5.0.conv2.weight"

    def drop(obj):
        del obj["focuser"][key]

    path = _modified(files, "144x144.pth.tar", tmp_path, drop)
    with pytest.raises(convert.CheckpointError, match=rf"missing key '{key}' in 'focuser'") as e:
        convert.load_torch_checkpoint(path, sth.config)
    assert path in str(e.value)


def test_shape_mismatch(sth, files, tmp_path):
    key = "net.features.3.conv.0.net.weight"  # a shifted block's expansion conv

    def shrink(obj):
        obj["glancer"][key] = obj["glancer"][key][:-1]

    path = _modified(files, "144x144.pth.tar", tmp_path, shrink)
    with pytest.raises(convert.CheckpointError,
                       match=rf"shape mismatch for '{key}' in 'glancer'.*block3/expand_conv"):
        convert.load_torch_checkpoint(path, sth.config)


def test_unexpected_key_and_bad_requests(sth, files, tmp_path):
    def extra(obj):
        obj["policy"]["state_encoder.9.weight"] = torch.zeros(3)

    path = _modified(files, "144x144.pth.tar", tmp_path, extra)
    with pytest.raises(convert.CheckpointError, match=r"unexpected key.*state_encoder.9.weight"):
        convert.load_torch_checkpoint(path, sth.config)
    with pytest.raises(convert.CheckpointError, match=r"\['policy'\] would be missing"):
        convert.load_torch_checkpoint(files["sth_stage1.pth.tar"], sth.config)
    with pytest.raises(convert.CheckpointError, match="has no policy"):
        convert.load_torch_checkpoint(files["sth_stage1.pth.tar"], sth.config, parts=["policy"])
    with pytest.raises(convert.CheckpointError, match="unknown module 'head'"):
        convert.load_torch_checkpoint(files["sth_stage1.pth.tar"], sth.config, parts=["head"])
    other = tmp_path / "other.pth"
    torch.save({"weights": {"a": torch.zeros(1)}, "step": 3}, str(other))
    with pytest.raises(convert.CheckpointError, match="not an AdaFocus or TSM checkpoint"):
        convert.load_torch_checkpoint(str(other), sth.config)


class _RunsACommand:
    """A pickle payload: unpickling it calls os.system (what a malicious checkpoint would do)."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_code_carrying_pickle_is_refused(sth, tmp_path):
    marker = tmp_path / "pwned"
    path = str(tmp_path / "evil.pth.tar")
    torch.save({"glancer": _RunsACommand(f"touch {marker}"), "epoch": 1}, path)
    with pytest.raises(convert.CheckpointError, match="refused to load"):
        convert.load_torch_checkpoint(path, sth.config)
    with pytest.raises(convert.CheckpointError, match="refused to load"):
        convert.inspect_torch_checkpoint(path)
    assert not marker.exists(), "the pickled command ran"
    # The payload is live: an unsafe load would have run it.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_merge_modules_errors(sth):
    partial = {"params": {"glancer": sth.fresh["params"]["glancer"]},
               "batch_stats": {"glancer": sth.fresh["batch_stats"]["glancer"]}}
    with pytest.raises(ValueError, match="has no module 'policy'"):
        convert.merge_modules(sth.fresh, partial, ["policy"])
    bad = jax.tree.map(lambda x: x, partial)
    bad["params"]["glancer"] = dict(bad["params"]["glancer"])
    bad["params"]["glancer"]["classifier"] = {"kernel": np.zeros((3, 3)), "bias": np.zeros(3)}
    with pytest.raises(ValueError, match="glancer/classifier/kernel has shape"):
        convert.merge_modules(sth.fresh, bad)


# --------------------------------------------------------------------------------------------------
# Orbax storage and the CLI.


def test_cli_round_trip(sth, files, tmp_path):
    """convert_checkpoint CLI → Orbax directory → load_variables → the torch model's logits."""
    config_file = tmp_path / "tiny_sthv2.py"
    config_file.write_text(textwrap.dedent(f"""
        from adafocus_jax import inference, models

        def get_config(arg=None):
            config = inference.load_config({os.path.join(REPO, "configs", "sthv2.py")!r})
            config.model = models.tiny_model_config("sthv2")
            return config
    """))
    out_dir = tmp_path / "converted"
    result = subprocess.run(
        [sys.executable, "-m", "adafocus_jax.tools.convert_checkpoint", f"--config={config_file}",
         f"--torch_checkpoint={files['144x144.pth.tar']}", f"--output_dir={out_dir}"],
        capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    stdout = result.stdout
    assert "kind sthsth (stage 3" in stdout and "Writing Orbax checkpoint" in stdout
    n_glancer = convert.count_parameters(sth.fresh)["glancer"]["params"]
    assert f"{n_glancer:,d}" in stdout and "total" in stdout

    restored = convert.load_variables(str(out_dir))
    direct = convert.load_torch_checkpoint(files["144x144.pth.tar"], sth.config)
    assert jax.tree.structure(restored) == jax.tree.structure(direct)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(direct)):
        np.testing.assert_array_equal(a, b)
    sth.check_logits(restored)
    meta = convert.read_conversion_metadata(str(out_dir))
    assert meta["kind"] == "sthsth" and meta["modules"] == sorted(convert.MODULES)

    # A second run refuses to overwrite; load_variables also reads .pth files directly.
    again = subprocess.run(
        [sys.executable, "-m", "adafocus_jax.tools.convert_checkpoint", f"--config={config_file}",
         f"--torch_checkpoint={files['144x144.pth.tar']}", f"--output_dir={out_dir}"],
        capture_output=True, text=True, timeout=300, cwd=REPO)
    assert again.returncode != 0 and "exists" in again.stderr
    partial = convert.load_variables(files["sth_stage1.pth.tar"], sth.config)
    assert set(partial["params"]) == {"glancer", "focuser", "classifier"}
    with pytest.raises(ValueError, match="needs the config"):
        convert.load_variables(files["sth_stage1.pth.tar"])


def test_save_and_load_partial(sth, files, tmp_path):
    partial = convert.load_torch_checkpoint(files["mobilenetv2_segment8.pth.tar"], sth.config,
                                            allow_partial=True)
    convert.save_variables(partial, str(tmp_path / "g"), {"source": "test"})
    restored = convert.load_variables(str(tmp_path / "g"))
    assert set(restored["params"]) == {"glancer"}
    merged = convert.merge_modules(sth.fresh, restored, ["glancer"])
    np.testing.assert_array_equal(merged["params"]["glancer"]["stem_conv"]["kernel"],
                                  partial["params"]["glancer"]["stem_conv"]["kernel"])
    np.testing.assert_array_equal(merged["params"]["focuser"]["conv1"]["kernel"],
                                  sth.fresh["params"]["focuser"]["conv1"]["kernel"])
    with pytest.raises(FileExistsError):
        convert.save_variables(partial, str(tmp_path / "g"))


def test_torch_is_optional(sth, files, monkeypatch):
    """Without torch, reading a PyTorch file says how to install it; converted Orbax variables
    need no torch at all."""
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    with pytest.raises(ImportError, match=r"optional dependency torch.*adafocus_jax\[torch\]"):
        convert.load_torch_checkpoint(files["144x144.pth.tar"], sth.config)
