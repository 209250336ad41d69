"""ActivityNet v1.3 (AdaFocus): MobileNetV2 glance and ResNet-50 local network on 16 shared frames, one of
7×7 grid patch positions per frame, GRU classifier. Patch 128 (default), 96, 160, 192.

    python main.py --config=configs/actnet.py --workdir=DIR
    python main.py --config=configs/actnet.py:patch=96 --workdir=DIR
    python main.py --config=configs/actnet.py:mode=v2 --workdir=DIR   # AdaFocusV2, one stage
"""

from adafocus_jax import config_lib


def get_config(arg=None):
    return config_lib.build_config("actnet", arg, allowed_patches=(128, 96, 160, 192))
