"""Official AdaFocus PyTorch checkpoints → Flax variables (adafocus_v1.md §10).

Modules, in import order (each imports only those before it): `convert.reading` (safe file
reading, `CheckpointError`), `convert.names` (key-name tables per network), `convert.inspection`
(which modules a file holds, architecture checks), `convert.conversion` (`load_torch_checkpoint`,
`merge_modules`), `convert.storage` (Orbax directories, `load_variables`). The names below are
re-exported here.

Every file kind the official code and README release is understood (§10.1):

| kind | file | modules it holds |
|---|---|---|
| `tsm_mobilenetv2` | `mobilenetv2_segment8.pth.tar` (TSM `main.py`, `module.`-prefixed) | glancer (its `new_fc` becomes the glancer's own head) |
| `tsm_resnet50` | `resnet50_segment12.pth.tar` | focuser; its `new_fc` becomes the classifier's `fc` |
| `sthsth` | Sth-Sth stage-1/2/3 `checkpoint.pth.tar`, `model_best.pth.tar`, `144x144.pth.tar`, ... | glancer, focuser, classifier (+ policy from stage 2 on) |
| `actnet` | `globalcnn`/`localcnn.pth.tar` (stage 0), `128checkpoint.pth.tar` (stage 1), `128s3_checkpoint.pth.tar` (stage 3) | glancer, focuser, classifier (+ policy when the file has one) |
| `v2_actnet` | AdaFocusV2 ActivityNet / FCVID / Mini-K `ckpt.best.pth.tar` (`main_v2.py`, `module.global_CNN.*`, ...) | glancer, focuser, policy, classifier (with `config.model.version = "v2"`) |
| `v2_sthsth` | AdaFocusV2 Sth-Sth / Jester checkpoints (`main.py`, `module.global_CNN.base_model.*`, ...) | glancer, focuser, policy (the classifier is a parameterless sum) |
| `uni_actnet` | Uni-AdaFocus ActivityNet / FCVID / Mini-K `actnet_p128.pth.tar`, `fcvid_p128.pth.tar`, `minik_p128.pth.tar` (`main.py` / `main_semiAMP.py`, DDP: `module.global_CNN.*`, ...) | glancer, focuser, policy, classifier (with `config.model.version = "uni"`, `configs/{actnet,fcvid,minik}.py:mode=uni`) |
| `uni_sthsth` | Uni-AdaFocus-TSM Sth-Sth / Jester `sthv1_p96_8and8.pth.tar` … `sthv2_p128_8and16.pth.tar`, `jester_p128_8and12.pth.tar` (TSM `main.py`, DDP: `module.global_CNN.base_model.*`, ...) | glancer, focuser, policy (with `configs/{sthv1,sthv2}.py:mode=uni`; the classifier is a parameterless sum) |
| `imagenet_mobilenetv2`, `imagenet_resnet50` | torchvision ImageNet state dicts (`mobilenet_v2-b0353104.pth`, `resnet50-0676ba61.pth`), where the official ActivityNet stage 0 starts | glancer / focuser; the 1000-way head is re-initialised (`head_seed`) |

Uni-AdaFocus files (`inspection._split_uni_sources`): `global_CNN` (tonylins-layout MobileNetV2)
+ `global_CNN_fc.1` → glancer (its `classifier`), `local_CNN` (torchvision ResNet-50) +
`local_CNN_fc.1` → focuser (its `fc`), both 1000-way ImageNet heads (`global_CNN.classifier`,
`local_CNN.fc`) dropped; `temporal_policy.Tconv.{0,1,3,4,6}` → `policy/temporal/{conv0, bn0, conv1,
bn1, out}` (the (3, 1) Conv2d over [C, G, 1] is a 1-D conv over the G glance frames),
`spatial_policy.encoder.{0,1,3,4,6,7,9}` → `policy/spatial/{conv0, bn0, conv1, bn1, conv2, bn2,
out}` (Conv3d), `aux_fc` → `policy/aux_fc`; `classifier.{global,local}_mlp.layers.{0,1}` →
`classifier/{global,local}_mlp(_bn)`, `classifier.{global,local}_classifiers.i.1` →
`classifier/{global,local}_head{i}`. The TSM (Sth-Sth / Jester) Uni files hold the AdaFocusV2
Sth-Sth TSNs instead (`global_CNN.base_model` + `new_fc` + `new_new_fc` → glancer with
`classifier` and `reg_classifier`, `local_CNN.*` likewise → focuser with `fc` and `reg_fc`) and
the same policy, whose last Conv3d spans the G glance frames (one box per video); no classifier.
A file of one version (V1, V2, Uni) with a config of another
is an error saying which `mode=` fits.

A file that holds only some modules converts to those modules only. Three ways to end with a full
variable tree:

    info = inspect_torch_checkpoint(path)                # kind, family, modules present, epoch, ...
    variables = load_torch_checkpoint(path, config)      # error unless the file has every module
    variables = load_torch_checkpoint(path, config, init_variables=fresh)   # missing ones from `fresh`
    partial = load_torch_checkpoint(path, config, allow_partial=True)       # only the file's modules
    variables = merge_modules(fresh, partial, ["glancer"])                   # pick modules by name

Within an AdaFocus file the separate `glancer` / `focuser` / `fc` / `policy` entries are used; GFV's
`model_state_dict` is the fallback for a module whose entry is missing. The ActivityNet policy is the
`policy` entry, else the focuser's `policy.policy_old.*` (the network the official code acts with),
else `policy.policy.*`; the official code copies policy into policy_old after every update, so they
agree (a warning is logged when they do not).

`parts=("glancer",)` restricts what is taken from a file (e.g. the stage-0 `globalcnn` file carries an
untrained focuser next to the trained glancer).

Conversion rules (§10.4): conv OIHW → HWIO (depthwise (C,1,3,3) → (3,3,1,C)), Conv3d OIDHW → DHWIO,
a (k, 1) Conv2d used as a 1-D conv (O,I,k,1) → (k,I,O); Linear (out,in) → Dense
kernel (in,out); BatchNorm weight/bias → scale/bias (params), running_mean/var → mean/var
(batch_stats), `num_batches_tracked` dropped; PyTorch GRU `weight_ih_l0`/`bias_ih_l0` → `gru/input`,
`weight_hh_l0`/`bias_hh_l0` → `gru/hidden` (see `models/recurrent.py`); the `.net.` segment of
TSM-wrapped convs is stripped; the truncated TSN's Sequential indices (0 conv1, 1 bn1, 4..7
layer1..4) are mapped back to ResNet names. The policy's flatten is NCHW in the Flax model too, so
its Linear needs no row permutation.

Loading is safe: `torch.load(..., map_location="cpu", weights_only=True)`; a pickle that would build
arbitrary objects or call functions raises `CheckpointError` without running anything. Every missing
or unexpected key and every shape mismatch raises `CheckpointError` naming the file and the key.

Converted variables are stored as an Orbax checkpoint (`save_variables`, the CLI
`python -m adafocus_jax.tools.convert_checkpoint`) and read back with `load_converted`;
`load_variables(path, config=None)` accepts either such a directory or a `.pth`/`.pth.tar` file.
torch is an optional dependency (`pip install adafocus_jax[torch]`), imported only when a PyTorch
file is read.
"""

from adafocus_jax.convert.conversion import (abstract_variables, count_parameters,
                                             load_torch_checkpoint, merge_modules)
from adafocus_jax.convert.inspection import CheckpointInfo, inspect_torch_checkpoint
from adafocus_jax.convert.reading import (COLLECTIONS, MODULES, TORCH_SUFFIXES, CheckpointError,
                                          is_torch_file, read_torch_file)
from adafocus_jax.convert.storage import (METADATA_FILE, VARIABLES_DIR, load_converted,
                                          load_variables, read_conversion_metadata, save_variables)

__all__ = ["CheckpointError", "CheckpointInfo", "COLLECTIONS", "METADATA_FILE", "MODULES",
           "TORCH_SUFFIXES", "VARIABLES_DIR", "abstract_variables", "count_parameters",
           "inspect_torch_checkpoint", "is_torch_file", "load_converted", "load_torch_checkpoint",
           "load_variables", "merge_modules", "read_conversion_metadata", "read_torch_file",
           "save_variables"]
