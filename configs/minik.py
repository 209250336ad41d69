"""Mini-Kinetics (AdaFocus): MobileNetV2 glance and ResNet-50 local network on 16 shared frames, one of
7×7 grid patch positions per frame, GRU classifier. Patch 128 (default), 96, 160, 192.

    python main.py --config=configs/minik.py --workdir=DIR
    python main.py --config=configs/minik.py:patch=96 --workdir=DIR
    python main.py --config=configs/minik.py:mode=v2 --workdir=DIR   # AdaFocusV2, one stage
"""

from adafocus_jax import config_lib, recipes

# The recipe this config runs, as data: tables of adafocus_jax/recipes.py (losses, patches, trained
# modules and their learning rates, epochs, batch sizes, restores), passed to build_config below.
STAGES = recipes.ACTNET_STAGES   # stage0_glancer, stage0_focuser, stage1, stage2, stage3
V2 = recipes.V2_HYPER["minik"]   # mode=v2: AdaFocusV2's one end-to-end stage
PATCH_SIZES = recipes.PATCH_SIZES["minik"]   # official patch sizes (the first is the default)


def get_config(arg=None):
    return config_lib.build_config("minik", arg, allowed_patches=PATCH_SIZES,
                                   stages_table=STAGES, v2_hyper=V2)
