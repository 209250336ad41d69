"""Something-Something v2 (AdaFocus-TSM): MobileNetV2-TSM glance on 8 frames, ResNet-50-TSM on
12 patches, one Gaussian patch location per video, logit-sum fusion. Patch 144 (default), 160, 176.
`policy=discrete`: the official code's other policy (`ppo_continuous=False`), a categorical choice
among a 5 x 5 grid of patch positions per video.

    python main.py --config=configs/sthv2.py --workdir=DIR
    python main.py --config=configs/sthv2.py:patch=176 --workdir=DIR
    python main.py --config=configs/sthv2.py:patch=144,policy=discrete --workdir=DIR
    python main.py --config=configs/sthv2.py:mode=v2 --workdir=DIR   # AdaFocusV2, one stage
"""

from adafocus_jax import config_lib, recipes

# The recipe this config runs, as data: tables of adafocus_jax/recipes.py (losses, patches, trained
# modules and their learning rates, epochs, batch sizes, restores), passed to build_config below.
STAGES = recipes.STHSTH_STAGES   # stage1, stage2, stage3
V2 = recipes.V2_HYPER["sthsth"]   # mode=v2: AdaFocusV2's one end-to-end stage
PATCH_SIZES = recipes.PATCH_SIZES["sthv2"]   # official patch sizes (the first is the default)


def get_config(arg=None):
    return config_lib.build_config("sthv2", arg, allowed_patches=PATCH_SIZES,
                                   stages_table=STAGES, v2_hyper=V2)
