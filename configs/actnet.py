"""ActivityNet v1.3 (AdaFocus): MobileNetV2 glance and ResNet-50 local network on 16 shared frames, one of
7×7 grid patch positions per frame, GRU classifier. Patch 128 (default), 96, 160, 192.

    python main.py --config=configs/actnet.py --workdir=DIR
    python main.py --config=configs/actnet.py:patch=96 --workdir=DIR
    python main.py --config=configs/actnet.py:mode=v2 --workdir=DIR   # AdaFocusV2, one stage
    python main.py --config=configs/actnet.py:mode=uni --workdir=DIR  # Uni-AdaFocus, one stage

The recipe is the data below (the one home of these numbers; configs/fcvid.py, configs/minik.py
and configs/synthetic.py start from it), written as in configs/sthv2.py: each row of `STAGES` holds
the arguments of `adafocus_jax.stages.recipe` for one stage, in run order, and a field a row does
not write takes the default of `stages.recipe`. `init_from` in `restore` is `config.init_from`, the
converted ImageNet weights. Each stage hands its best-validated variables to the next
(`config.train.handoff = "best"`, as the official scripts).
"""

from adafocus_jax import config_lib

# Official patch sizes (`:patch=P`); the first is the default.
PATCH_SIZES = (128, 96, 160, 192)

# main_dist.py + the README commands (spec §4.3).
STAGES = {
    "stage0_glancer": dict(
        loss="glancer_ce", patch_mode="none", modes=dict(glancer=True),
        lr=dict(glancer=0.01), num_epochs=15, batch_size=64, eval_every_epochs=5,
        eval_patch_mode="glancer", restore="glancer=init_from"),
    "stage0_focuser": dict(
        loss="focuser_ce", patch_mode="none", modes=dict(focuser=True),
        lr=dict(focuser=0.01), num_epochs=15, batch_size=64, eval_every_epochs=5,
        eval_patch_mode="focuser", restore="focuser=init_from"),
    "stage1": dict(  # GRU-output dropout 0.8 on
        loss="step_ce", patch_mode="random", modes=dict(focuser=True, classifier=True),
        lr=dict(focuser=5e-4, classifier=0.05), num_epochs=50, batch_size=64,
        eval_every_epochs=5, eval_patch_mode="random",
        restore="glancer=stage0_glancer,focuser=stage0_focuser"),
    "stage2": dict(
        loss="ppo", patch_mode="sample", modes=dict(policy=True),
        lr=dict(policy=3e-4), optimizer="adam", lr_schedule="constant", num_epochs=50,
        batch_size=64, eval_every_epochs=5, eval_patch_mode="policy",
        restore="glancer=stage1,focuser=stage1,classifier=stage1"),
    "stage3": dict(  # only the GRU classifier trains (the official code; the paper says f_L too)
        loss="step_ce", patch_mode="policy", modes=dict(classifier=True),
        lr=dict(classifier=5e-3), num_epochs=10, batch_size=64,
        eval_every_epochs=5, eval_patch_mode="policy",
        restore="glancer=stage2,focuser=stage2,classifier=stage2,policy=stage2"),
}

# `:mode=v2`, AdaFocusV2 (adafocus_family.md §1.2; the official README commands): ONE end-to-end
# stage "v2" (loss "v2", policy + random patches, every network in train mode), SGD momentum 0.9,
# cosine, the official extra epoch at lr 0. The learning rate of a module is `lr` × `mult`
# (policy: stn_lr_ratio, glancer with its own head: global_lr_ratio, focuser with its heads: 1,
# classifier: classifier_lr_ratio); `clip` > 0 would clip the global gradient norm.
V2 = dict(lr=0.002, mult=dict(policy=0.1, glancer=0.5, focuser=1.0, classifier=5.0),
          num_epochs=50, batch_size=32, weight_decay=1e-4, extra_epoch=True, clip=0.0,
          eval_every_epochs=1, restore="glancer=init_from,focuser=init_from")

# `:mode=uni`, Uni-AdaFocus (adafocus_family.md §1.4; the official README command and opts.py):
# ONE stage "uni" (loss "uni": chosen frames, policy + random boxes, every network in train mode),
# SGD momentum 0.9, cosine, no extra epoch (the official loop). The learning rate of a module is
# `lr` × `mult` (glancer with its head: global_lr_ratio, policy = temporal + spatial policy:
# temporal_lr_ratio = stn_lr_ratio, focuser with its head: 1, classifier: classifier_lr_ratio);
# `group_mult` gives sub-modules their own multiplier (the proxy head aux_fc: global_lr_ratio).
# `norm_ratio` weighs the scale regulariser, `kl_ratio` the KL term; `fc_dropout` is the glance
# and local heads' dropout; no gradient clipping (`clip` 0). The official code validates when
# epoch % 5 == 0 and in the last 9 epochs; here every `eval_every_epochs`.
UNI = dict(lr=0.002, mult=dict(glancer=0.5, policy=0.2, focuser=1.0, classifier=20.0),
           group_mult={"policy/aux_fc": 0.5}, num_epochs=50, batch_size=32, weight_decay=2e-4,
           extra_epoch=False, clip=0.0, eval_every_epochs=5, restore="glancer=init_from,focuser=init_from",
           norm_ratio=1.0, kl_ratio=0.0, fc_dropout=0.2)


def get_config(arg=None):
    return config_lib.build_config("actnet", arg, allowed_patches=PATCH_SIZES,
                                   stages_table=STAGES, v2_hyper=V2, uni_hyper=UNI)
