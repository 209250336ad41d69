"""Your own videos: train on a dataset written by `python -m adafocus_jax.tools.prepare_dataset`.

    python -m adafocus_jax.tools.prepare_dataset --input=VIDEOS --output=DATA --val_fraction=0.2
    python main.py --config=configs/custom.py:root=DATA --workdir=RUN              # small, CPU
    python main.py --config=configs/custom.py:root=DATA,size=official,family=actnet \\
        --config.init_from=CONVERTED_IMAGENET_WEIGHTS --workdir=RUN

Options (comma-separated `key=value` after the colon):

* `root=DIR` (required): the prepared folder; its `dataset.json`, lists and `classes.txt`.
* `family=actnet` (default) | `sthv2`: ActivityNet style (per-frame grid policy, GRU classifier,
  5 stages) or Something-Something style (TSM, one Gaussian location per video, 3 stages).
* `size=small` (default) | `official`: small networks trained from scratch (a CPU is enough), or
  the paper's MobileNetV2 / ResNet-50, which need ImageNet / TSM weights in `--config.init_from`
  (training refuses to start without them unless `--config.allow_random_init=True`).
* `frames=N` (small 4; official 16, sthv2 8 + 12): frames per video for every network
  (`glance_frames=`, `focus_frames=` set them apart, sthv2 only).
* `input=S` (small 96; official 224): the frame size the networks see (training crops and the
  evaluation frame are resized to S x S).
* `glance=G` (small: S with the ResNet glance network, 72 with MobileNetV2; official S): the
  glance network's input size.
* `glance_arch=resnet|mobilenet_v2` (small resnet, official mobilenet_v2): the glance network. The
  small preset's is a bottleneck ResNet of its local network's depth (stages 1,1,1,1) at half its
  width: a from-scratch MobileNetV2 x0.25 stayed at chance on the benchmark's data at 72 and at
  96 px (README); the official size keeps the paper's MobileNetV2, whose ImageNet weights
  `--config.init_from` loads.
* `glance_width=C` (small 4; official: the local network's width): the ResNet glance network's
  width (its cost grows with C²).
* `patch=P` (small 48; official 128, sthv2 144): the local network's patch size.
* `flip=0|1` (family default: actnet 1, sthv2 0): horizontal flips in training (off for text,
  digits, left/right actions).
* `grey=0|1` (small 1, official 0): both networks see the mean of the colour channels
  (`models.layers.input_filter`), so they cannot tell classes apart by colour.
* `highpass=W` (odd; small: 7 at input 96, scaled with `input`; official 0): both networks see
  their input minus its local W x W mean (`models.layers.box_highpass`), 0 = the plain input.
* `translate=K` (small: 6 at input 96, scaled with `input`; official 0): each training clip is
  shifted by up to K pixels after the crop (`data.transforms.random_translate`).
* `epochs=X` (1): multiplies every stage's epoch count (more for a smaller dataset).
* `quick`: one step per stage and a tiny evaluation, a smoke run of the whole recipe.

The number of classes is counted from `classes.txt`; the frame template, list files and list
format from `dataset.json`. The run ends with the benchmark table (`RUN/custom_benchmark.json`):
held-out (val) top-1 of the learned policy against random and centre patches, the local network on
whole frames and the glance network alone.

What the small preset changes from the synthetic benchmark's recipe (configs/synthetic.py), and
why (README "Your own videos"; benchmarks/custom_dataset.py is the end-to-end check):
* Evaluation sees the frames as training does: the data's `scale_size` is S (the official 256 for
  224 crops would, at S = 96, centre-crop 1/2.7 of each side at 1.78x zoom: another input scale
  than every training crop).
* Training crops are the official multi-scale crop restricted to scales (1, 0.875): a 0.66 crop
  loses a third of each side and, with it, often the object the label is about.
* There is no object box on one's own data, so the local network is pre-trained on whole frames
  (official), and stage 1 draws its patches from the policy's grid (`random_grid`).
* Epochs are passes over the training list (the synthetic data renders a fresh set each epoch), so
  a small dataset gets more of them; the learning rates are those of the synthetic recipe.
* The glance network is a small ResNet on the whole frame (`glance_arch=`, `glance_width=`),
  pre-trained 30 epochs: a from-scratch MobileNetV2 x0.25 never left chance on the benchmark's
  data, so the policy had nothing to read and settled on the centre cell.
* Both small networks see a grey, high-pass-filtered input (`grey=`, `highpass=`) and training
  clips are randomly translated (`translate=`): trained from scratch on a few hundred videos the
  networks otherwise fit each video's colours, background and the few fixed crop offsets instead of
  the object's shape (measured: README).
"""

import json
import os

import ml_collections

from adafocus_jax import config_lib, data, models, stages
from adafocus_jax.data import lists

FAMILIES = ("actnet", "sthv2")
SIZES = ("small", "official")
# The small preset's sizes: the ResNet glance network sees the whole input-sized frame
# at half the local network's width; a MobileNetV2 one (glance_arch=mobilenet_v2) sees 72 px.
SMALL = dict(frames=4, input=96, mobilenet_glance=72, patch=48, glance_width=4)
SMALL_CROP_SCALES = (1.0, 0.875)

# Per stage of the small preset: epochs (passes over the training list), optimizer, learning
# rates, patch modes (configs/synthetic.py explains the modes and the optimizer).
_SMALL_ACTNET = {
    "stage0_glancer": dict(num_epochs=30, lr=dict(glancer=2e-3)),
    "stage0_focuser": dict(num_epochs=30, lr=dict(focuser=2e-3)),
    "stage1": dict(num_epochs=16, lr=dict(focuser=1e-3, classifier=3e-3),
                   patch_mode="random_grid", eval_patch_mode="random_grid"),
    "stage2": dict(num_epochs=20, lr=dict(policy=2e-3), ppo_epochs=4),
    "stage3": dict(num_epochs=6, lr=dict(focuser=5e-4, classifier=1e-3),
                   modes=dict(focuser=True, classifier=True)),
}
_SMALL_STHV2 = {
    "stage1": dict(num_epochs=30, lr=dict(glancer=1e-3, focuser=1e-3, classifier=3e-3),
                   modes=dict(glancer=True, focuser=True, classifier=True)),
    "stage2": dict(num_epochs=16, lr=dict(policy=2e-3), ppo_epochs=4),
    "stage3": dict(num_epochs=6, lr=dict(focuser=5e-4, classifier=1e-3),
                   modes=dict(focuser=True, classifier=True)),
}


def read_prepared(root: str) -> dict:
    """`root/dataset.json` of prepare_dataset with the class names; ValueError naming the file."""
    if not root:
        raise ValueError("configs/custom.py: root=DIR is required (a folder written by "
                         "python -m adafocus_jax.tools.prepare_dataset)")
    path = os.path.join(root, "dataset.json")
    if not os.path.isfile(path):
        raise ValueError(f"configs/custom.py: {path} does not exist: root= must be a folder "
                         "written by python -m adafocus_jax.tools.prepare_dataset")
    with open(path, encoding="utf-8") as f:
        meta = json.load(f)
    names = lists.read_class_names(os.path.join(root, meta["categories"]))
    if len(names) != int(meta["num_classes"]):
        raise ValueError(f"{path}: num_classes {meta['num_classes']} but {len(names)} names in "
                         f"{meta['categories']}")
    meta["class_names"] = names
    return meta


def _int(options: dict, key: str, default: int | None) -> int | None:
    value = options.pop(key, None)
    if value is None:
        return default
    try:
        out = int(value)
    except ValueError:
        raise ValueError(f"configs/custom.py: {key}={value!r} is not an integer") from None
    if out < 1:
        raise ValueError(f"configs/custom.py: {key}={out} must be >= 1")
    return out


def _flag(options: dict, key: str, default: bool) -> bool:
    value = options.pop(key, None)
    if value is None:
        return default
    if value not in ("0", "1"):
        raise ValueError(f"configs/custom.py: {key}={value!r}: expected 0 or 1")
    return value == "1"


def _small_schedule(config: ml_collections.ConfigDict, family: str, scale: float) -> None:
    schedule = _SMALL_ACTNET if family == "actnet" else _SMALL_STHV2
    for name, spec in schedule.items():
        recipe = config.stages[name]
        recipe.num_epochs = max(1, int(round(spec["num_epochs"] * scale)))
        recipe.batch_size = 32
        recipe.optimizer = "adam"
        recipe.lr_schedule = "constant"
        recipe.weight_decay = 0.0
        recipe.extra_epoch = False
        recipe.patch_mode = spec.get("patch_mode", recipe.patch_mode)
        recipe.eval_patch_mode = spec.get("eval_patch_mode", recipe.eval_patch_mode)
        recipe.ppo.epochs = spec.get("ppo_epochs", recipe.ppo.epochs)
        for module, train_mode in spec.get("modes", {}).items():
            recipe.modes[module] = train_mode
        for module, lr in spec["lr"].items():
            recipe.lr[module] = lr
        recipe.eval_every_epochs = 0     # one evaluation at the end of each stage


def get_config(arg=None):
    """`arg`: "root=DIR[,family=...][,size=...][,frames=N]..." (see the module docstring)."""
    items = [item.strip() for item in (arg or "").split(",") if item.strip()]
    quick = "quick" in items
    options = config_lib.parse_options(",".join(item for item in items if item != "quick"))
    root = options.pop("root", "")
    family = options.pop("family", "actnet")
    size = options.pop("size", "small")
    if family not in FAMILIES:
        raise ValueError(f"configs/custom.py: family={family!r}: expected one of {FAMILIES}")
    if size not in SIZES:
        raise ValueError(f"configs/custom.py: size={size!r}: expected one of {SIZES}")
    meta = read_prepared(root)
    small = size == "small"
    sth = family in stages.STHSTH

    # The official recipe of the family (configs/actnet.py, configs/sthv2.py: STAGES, PATCH_SIZES).
    official = config_lib.sibling_config(__file__, family)
    config = ml_collections.ConfigDict()
    config.dataset = family
    m = config.model = models.default_model_config(family, patch_size=official.PATCH_SIZES[0])
    d = config.data = data.default_data_config(family)
    stages.add_training_config(config, stage_table=official.STAGES)
    config.dataset = "custom"            # the benchmark writes RUN/custom_benchmark.json
    config.family = family

    frames = _int(options, "frames", SMALL["frames"] if small else d.num_glance_frames)
    glance_frames = _int(options, "glance_frames", frames if (small or not sth)
                         else d.num_glance_frames)
    focus_frames = _int(options, "focus_frames", frames if (small or not sth)
                        else d.num_focus_frames)
    if not sth and glance_frames != focus_frames:
        raise ValueError("configs/custom.py: family=actnet shares its frames between the "
                         f"networks: glance_frames={glance_frames} != focus_frames={focus_frames}")
    input_size = _int(options, "input", SMALL["input"] if small else 224)
    glance_arch = options.pop("glance_arch", "resnet" if small else "mobilenet_v2")
    small_glance = SMALL["mobilenet_glance"] if glance_arch == "mobilenet_v2" else input_size
    glance_size = _int(options, "glance", small_glance if small else input_size)
    patch = _int(options, "patch", SMALL["patch"] if small else m.patch_size)
    flip = _flag(options, "flip", bool(d.flip))
    grey = _flag(options, "grey", small)
    # None: the local network's width (official sizes).
    glance_width = _int(options, "glance_width", SMALL["glance_width"] if small else None)
    highpass = options.pop("highpass", None)
    translate = options.pop("translate", None)
    scale = float(options.pop("epochs", 1.0))
    if options:
        raise ValueError(f"configs/custom.py: unknown options {sorted(options)}; expected root, "
                         "family, size, frames, glance_frames, focus_frames, input, glance, "
                         "glance_arch, glance_width, patch, flip, grey, highpass, translate, "
                         "epochs, quick")
    if not 0 < patch <= input_size or glance_size > input_size:
        raise ValueError(f"configs/custom.py: need patch={patch} <= input={input_size} and "
                         f"glance={glance_size} <= input")

    m.num_classes = int(meta["num_classes"])
    m.input_size, m.glance_size, m.patch_size = input_size, glance_size, patch
    m.num_glance_frames, m.num_focus_frames = glance_frames, focus_frames

    d.dataset = "custom"
    d.format = "frames"
    d.root = os.path.join(root, meta["frames_dir"])
    d.list_dir = root
    d.train_list, d.val_list, d.test_list = meta["train_list"], meta["val_list"], ""
    d.categories = os.path.join(root, meta["categories"])
    d.list_separator = meta["list_separator"]
    d.frame_template = meta["frame_template"]
    d.num_classes = m.num_classes
    d.max_labels = 1
    d.shuffle_labels = False
    d.num_glance_frames, d.num_focus_frames = glance_frames, focus_frames
    d.input_size = input_size
    d.scale_size = input_size if small else max(input_size, round(input_size * 256 / 224))
    d.flip = flip

    config.eval.metric = "top1"
    config.eval.split = "val"
    # The learned-vs-random table (the ActivityNet family: its local network has a stage-0 head
    # for the full-frame row).
    config.benchmark.enabled = not sth
    config.benchmark.split = "val"
    config.benchmark.variants = "learned,random,center,full_frame,glance_only"
    config.benchmark.full_frame_stage = "stage0_focuser"
    # "passed": the learned policy at least 5 points ahead of random and centre patches (the
    # synthetic benchmark's 15 is for its digit-in-one-cell data; 150 validation videos = 0.67
    # points each).
    config.benchmark.required_margin = 5.0
    config.benchmark.batch_size = 50
    config.benchmark.max_batches = 0
    config.ckpt.async_save = False
    # The input filter and the translation of the small preset (README "Your own videos"):
    # sizes in pixels of a 96-px input, scaled with `input`; the box width kept odd.
    if highpass is None:
        highpass = str(2 * round(3.5 * input_size / 96 - 0.5) + 1 if small else 0)
    if not highpass.isdigit() or (int(highpass) > 0 and int(highpass) % 2 == 0):
        raise ValueError(f"configs/custom.py: highpass={highpass!r}: expected 0 or an odd "
                         "integer (the box width in pixels)")
    if translate is None:
        translate = str(round(6 * input_size / 96) if small else 0)
    if not translate.isdigit() or int(translate) >= input_size:
        raise ValueError(f"configs/custom.py: translate={translate!r}: expected an integer in "
                         f"[0, input={input_size})")
    for net in (m.glancer, m.focuser):
        net.input_grey, net.input_highpass = grey, int(highpass)
    d.translate = int(translate)
    if glance_arch not in models.GLANCE_ARCHS:
        raise ValueError(f"configs/custom.py: glance_arch={glance_arch!r}: expected one of "
                         f"{models.GLANCE_ARCHS}")
    if small:
        config_lib.sibling_config(__file__, "synthetic").small_model(m)
    # A ResNet glance network has the local network's shape (the small preset: stages 1,1,1,1,
    # width 8); it runs on the glance frames at `glance` pixels, the local one on patches.
    m.glancer.arch = glance_arch
    m.glancer.stage_sizes = tuple(m.focuser.stage_sizes)
    m.glancer.width = glance_width or m.focuser.width
    if small:
        d.crop_scales = SMALL_CROP_SCALES
        _small_schedule(config, family, scale)
        config.allow_random_init = True   # small networks train from scratch
        config.train.handoff = "last"     # one evaluation per stage: best = last
        config.train.eval_batch_size = 50
        config.train.log_every_steps = 20
        config.train.num_workers = 2
    else:
        # The official recipe; its backbones start from ImageNet (actnet) or TSM Kinetics/Sth-Sth
        # (sthv2) weights: --config.init_from=DIR (tools/convert_checkpoint). Without them the
        # run stops before the first step (stages.check_init_from) unless allow_random_init.
        config.allow_random_init = False
        if scale != 1.0:
            for name in config.stages.keys():
                config.stages[name].num_epochs = max(
                    1, int(round(config.stages[name].num_epochs * scale)))
    if quick:
        config.train.num_steps = 1
        config.train.max_eval_batches = 1
        config.train.eval_batch_size = 8
        config.benchmark.batch_size = 8
        config.benchmark.max_batches = 1
        config.train.log_every_steps = 1
        for name in config.stages.keys():
            config.stages[name].batch_size = 8
    return config
