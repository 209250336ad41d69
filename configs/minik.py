"""Mini-Kinetics (AdaFocus): MobileNetV2 glance and ResNet-50 local network on 16 shared frames, one of
7×7 grid patch positions per frame, GRU classifier. Patch 128 (default), 96, 160, 192.

    python main.py --config=configs/minik.py --workdir=DIR
    python main.py --config=configs/minik.py:patch=96 --workdir=DIR
    python main.py --config=configs/minik.py:mode=v2 --workdir=DIR   # AdaFocusV2, one stage
"""

from adafocus_jax import config_lib

# The official scripts train Mini-Kinetics with the ActivityNet recipe: the tables of
# configs/actnet.py, except AdaFocusV2's base learning rate and batch (official README command).
_ACTNET = config_lib.sibling_config(__file__, "actnet")
PATCH_SIZES = _ACTNET.PATCH_SIZES
STAGES = _ACTNET.STAGES
V2 = dict(_ACTNET.V2, lr=0.003, batch_size=48)


def get_config(arg=None):
    return config_lib.build_config("minik", arg, allowed_patches=PATCH_SIZES,
                                   stages_table=STAGES, v2_hyper=V2)
