"""Something-Something v1 (AdaFocus-TSM): MobileNetV2-TSM glance on 8 frames, ResNet-50-TSM on
12 patches, one Gaussian patch location per video, logit-sum fusion. Patch 144 (default), 160, 176.
`policy=discrete`: the official code's other policy (`ppo_continuous=False`), a categorical choice
among a 5 x 5 grid of patch positions per video.

    python main.py --config=configs/sthv1.py --workdir=DIR
    python main.py --config=configs/sthv1.py:patch=176 --workdir=DIR
    python main.py --config=configs/sthv1.py:patch=144,policy=discrete --workdir=DIR
    python main.py --config=configs/sthv1.py:mode=v2 --workdir=DIR   # AdaFocusV2, one stage
    python main.py --config=configs/sthv1.py:mode=uni --workdir=DIR  # Uni-AdaFocus-TSM, 128², 8+16
"""

from adafocus_jax import config_lib

# Sth-Sth V1 trains with the same recipe as Sth-Sth V2 (one set of official scripts for both):
# the tables of configs/sthv2.py.
_STHV2 = config_lib.sibling_config(__file__, "sthv2")
PATCH_SIZES = _STHV2.PATCH_SIZES
STAGES = _STHV2.STAGES
V2 = _STHV2.V2
# Uni-AdaFocus-TSM: the same command except the weight decay (--wd 1e-3 on Sth-Sth V1).
UNI_PATCH_SIZES = _STHV2.UNI_PATCH_SIZES
UNI_FOCUS_FRAMES = _STHV2.UNI_FOCUS_FRAMES
UNI = dict(_STHV2.UNI, weight_decay=1e-3)


def get_config(arg=None):
    return config_lib.build_config("sthv1", arg, allowed_patches=PATCH_SIZES,
                                   stages_table=STAGES, v2_hyper=V2, uni_hyper=UNI,
                                   uni_patches=UNI_PATCH_SIZES, uni_focus_frames=UNI_FOCUS_FRAMES)
