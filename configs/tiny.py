"""A tiny config for tests and smoke runs: the official recipe (the `STAGES` of configs/<dataset>.py)
and architecture of a dataset family with tiny widths, 64x64 random in-memory videos and a few steps
per stage.

    python main.py --config=configs/tiny.py --workdir=/tmp/tiny                # Sth-Sth family
    python main.py --config=configs/tiny.py:actnet --workdir=/tmp/tiny_anet    # ActivityNet family
    python main.py --config=configs/tiny.py --workdir=/tmp/t --config.run_stages=stage1 \
        --config.train.num_steps=2

    python main.py --config=configs/tiny.py:sthv2,policy=discrete --workdir=/tmp/tiny_discrete
    python main.py --config=configs/tiny.py:sthv2,mode=uni --workdir=/tmp/tiny_uni_tsm

`mode=uni`: Uni-AdaFocus (the `UNI` table of configs/<dataset>.py, one stage) on the tiny
networks, with N = 12 candidate frames, G = 6 glanced and K = 4 chosen, boxes of 16…64 px on the
64² frames (patch 32) and tiny policy and classifier widths.

Each stage runs E + 1 = 2 epochs of 32 / 8 = 4 steps (8 steps per stage; Uni-AdaFocus: 1 epoch).
No pretrained weights: modules the recipe restores from `init_from` keep their random
initialisation (`allow_random_init`).
"""

import ml_collections

from adafocus_jax import config_lib, data, models, stages


def get_config(arg=None):
    """`arg`: "DATASET[,policy=gaussian|discrete][,mode=uni]" (default sthv2; policy for
    sthv1/sthv2 in V1 mode)."""
    items = [item.strip() for item in (arg or "sthv2").split(",") if item.strip()]
    if items and "=" not in items[0]:
        dataset, items = items[0], items[1:]
    else:
        dataset = "sthv2"
    options = config_lib.parse_options(",".join(items))
    policy = options.pop("policy", None)
    mode = options.pop("mode", "v1")
    if mode not in ("v1", "uni"):
        raise ValueError(f"configs/tiny.py: mode={mode!r}: expected v1 or uni")
    if mode == "uni" and policy is not None:
        raise ValueError(f"configs/tiny.py: policy={policy} is a V1 option; mode=uni has its own "
                         "policies")
    if options:
        raise ValueError(f"configs/tiny.py: unknown options {sorted(options)}")
    if dataset not in ("sthv1", "sthv2", "actnet", "fcvid", "minik"):
        raise ValueError(f"configs/tiny.py: unknown dataset option {dataset!r}")
    config = ml_collections.ConfigDict()
    config.dataset = dataset
    config.model = models.tiny_model_config(dataset)
    d = data.default_data_config(dataset)
    d.format = "random"
    d.num_classes = config.model.num_classes
    d.input_size = config.model.input_size
    d.scale_size = config.model.input_size
    d.num_glance_frames = config.model.num_glance_frames
    d.num_focus_frames = config.model.num_focus_frames
    d.random = ml_collections.ConfigDict(dict(num_train=32, num_val=12, num_test=12))
    config.data = d
    # The official stages of the dataset (configs/<dataset>.py), shortened below.
    official = config_lib.sibling_config(__file__, dataset)
    if mode == "uni":
        _tiny_uni(config, official.UNI["fc_dropout"])
    stages.add_training_config(config, stage_table=official.STAGES,
                               uni_hyper=official.UNI if mode == "uni" else None)
    for name in config.stages.keys():
        recipe = config.stages[name]
        recipe.num_epochs = 1
        recipe.batch_size = 8
        recipe.eval_every_epochs = 1
    config.train.log_every_steps = 2
    config.train.eval_batch_size = 8
    config.ckpt.max_to_keep = 2
    config.allow_random_init = True
    if policy is not None:
        config_lib.set_sthsth_policy(config, policy, "configs/tiny.py")
    return config


def _tiny_uni(config: ml_collections.ConfigDict, fc_dropout: float) -> None:
    """The tiny model and data as Uni-AdaFocus (`models.to_uni_model_config`): 12 candidate
    frames, 6 glanced, 4 chosen; boxes 16…64 px; policy widths 4, 4 Monte-Carlo samples, exit
    MLPs of 8 (ActivityNet family)."""
    c = models.to_uni_model_config(config.model, fc_dropout)
    c.num_candidate_frames, c.num_glance_frames, c.num_focus_frames = 12, 6, 4
    c.policy.side_range = (16.0, 64.0)
    c.policy.spatial_hidden = c.policy.temporal_hidden = 4
    c.policy.mc_samples = 4
    if c.classifier.kind == "uni_exit":
        c.classifier.hidden_dim = 8
    config_lib.set_uni_data(config)
