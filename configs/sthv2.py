"""Something-Something v2 (AdaFocus-TSM): MobileNetV2-TSM glance on 8 frames, ResNet-50-TSM on
12 patches, one Gaussian patch location per video, logit-sum fusion. Patch 144 (default), 160, 176.
`policy=discrete`: the official code's other policy (`ppo_continuous=False`), a categorical choice
among a 5 x 5 grid of patch positions per video.

    python main.py --config=configs/sthv2.py --workdir=DIR
    python main.py --config=configs/sthv2.py:patch=176 --workdir=DIR
    python main.py --config=configs/sthv2.py:patch=144,policy=discrete --workdir=DIR
    python main.py --config=configs/sthv2.py:mode=v2 --workdir=DIR   # AdaFocusV2, one stage
    python main.py --config=configs/sthv2.py:mode=uni --workdir=DIR  # Uni-AdaFocus-TSM, 128², 8+16
    python main.py --config=configs/sthv2.py:mode=uni,patch=96,frames=12 --workdir=DIR

The recipe is the data below (the one home of these numbers; configs/sthv1.py reuses it). Each row
of `STAGES` holds the arguments of `adafocus_jax.stages.recipe` for one stage, in the order the
stages run; every field not written takes the default written there (SGD with momentum 0.9 and
weight decay 1e-4, cosine learning rate set once per epoch, E + 1 epochs with the last at lr 0;
PPO gamma 0.7, clip 0.2, value 0.5, entropy 0.01; Adam without weight decay). `lr` is per module;
a module not listed is frozen. `restore` names, per module, the stage it starts from (`init_from`:
`config.init_from`, the converted ImageNet / TSM weights).
"""

from adafocus_jax import config_lib

# Official patch sizes (`:patch=P`); the first is the default.
PATCH_SIZES = (144, 160, 176)

# stage1/2/3.yaml + train_stage*.sh (spec §4.2), with the learning rates the paper intends; the
# released scripts' optimizer-group bug is `--config.reproduce_released_lr_bug=True` (see stages).
STAGES = {
    "stage1": dict(  # classifier dropout 0.5 on; official stage-1 validation: random patches
        loss="ce", patch_mode="random", modes=dict(focuser=True, classifier=True),
        lr=dict(focuser=1e-5, classifier=0.01), num_epochs=10, batch_size=64,
        eval_every_epochs=1, eval_patch_mode="random",
        restore="glancer=init_from,focuser=init_from"),
    "stage2": dict(  # policy BN on batch statistics
        loss="ppo", patch_mode="sample", modes=dict(policy=True),
        lr=dict(policy=3e-4), optimizer="adam", lr_schedule="constant", num_epochs=50,
        batch_size=64, eval_every_epochs=1, eval_patch_mode="policy",
        restore="glancer=stage1,focuser=stage1,classifier=stage1"),
    "stage3": dict(  # the classifier in train mode with dropout 0 is eval mode
        loss="ce", patch_mode="policy", modes=dict(),
        lr=dict(classifier=5e-4), num_epochs=10, batch_size=32,
        eval_every_epochs=1, eval_patch_mode="policy",
        restore="glancer=stage2,focuser=stage2,classifier=stage2,policy=stage2"),
}

# `:mode=v2`, AdaFocusV2 (adafocus_family.md §1.2; official train.sh): ONE end-to-end stage "v2"
# (loss "v2", policy + random patches, every network in train mode), SGD momentum 0.9, cosine. The
# learning rate of a module is `lr` × `mult` (policy: stn_lr_ratio, glancer: global_lr_ratio,
# classifier: classifier_lr_ratio); `clip` > 0 clips the global gradient norm (torch --gd).
V2 = dict(lr=0.01, mult=dict(policy=0.01, glancer=0.5, focuser=1.0, classifier=1.0),
          num_epochs=50, batch_size=32, weight_decay=5e-4, extra_epoch=False, clip=20.0,
          eval_every_epochs=1, restore="glancer=init_from,focuser=init_from")

# `:mode=uni`, Uni-AdaFocus-TSM (adafocus_family.md §1.4; the official TSM README commands and
# opts.py): 8 TSM glance frames, K local frames chosen among N = 3K (`:frames=K`, the first is the
# default), patch P (`:patch=P`, the first is the default); the released checkpoints are 96² with
# 8 or 12 and 128² with 12 or 16 local frames. ONE stage "uni" (loss "uni": chosen frames, policy
# + random boxes, every network in train mode, BN not frozen: --npb), SGD momentum 0.9, cosine,
# no extra epoch, the global gradient norm clipped at 20 (--gd 20). The learning rate of a module
# is `lr` × `mult` (glancer with its TSN heads: global_lr_ratio, policy = temporal + spatial
# policy: temporal_lr_ratio = stn_lr_ratio, focuser with its heads: 1; the classifier sums logits
# and has no parameters); `group_mult`: the proxy head aux_fc at global_lr_ratio. `fc_dropout` is
# the TSN dropout of both networks; no KL term (`kl_ratio` 0). Validated every epoch.
UNI_PATCH_SIZES = (128, 96)
UNI_FOCUS_FRAMES = (16, 12, 8)
UNI = dict(lr=0.02, mult=dict(glancer=0.5, policy=0.2, focuser=1.0, classifier=1.0),
           group_mult={"policy/aux_fc": 0.5}, num_epochs=50, batch_size=64, weight_decay=5e-4,
           extra_epoch=False, clip=20.0, eval_every_epochs=1,
           restore="glancer=init_from,focuser=init_from", norm_ratio=0.5, kl_ratio=0.0,
           fc_dropout=0.5)


def get_config(arg=None):
    return config_lib.build_config("sthv2", arg, allowed_patches=PATCH_SIZES,
                                   stages_table=STAGES, v2_hyper=V2, uni_hyper=UNI,
                                   uni_patches=UNI_PATCH_SIZES, uni_focus_frames=UNI_FOCUS_FRAMES)
