"""The official AdaFocus recipes, as data: the one home of their numbers.

Each row of a stage table holds the arguments of `stages.recipe` for one stage (every other field
takes the default written there: SGD momentum 0.9, weight decay 1e-4 for SGD, PPO gamma 0.7, clip
0.2, ...); a table's order is the order its stages run in (`config.stage_order`). `restore` names,
per module, the stage (or `init_from` = `config.init_from`) it starts from.

    configs/sthv1.py, configs/sthv2.py                       STHSTH_STAGES, V2_HYPER["sthsth"]
    configs/actnet.py, configs/fcvid.py, configs/minik.py    ACTNET_STAGES, V2_HYPER[dataset]
    configs/synthetic.py                                     ACTNET_STAGES (then its own schedule)

`PATCH_SIZES` lists each dataset's official patch sizes, the default first.
"""

# Official patch sizes per dataset (`configs/<dataset>.py:patch=P`); the first is the default.
PATCH_SIZES = {"sthv1": (144, 160, 176), "sthv2": (144, 160, 176),
               "actnet": (128, 96, 160, 192), "fcvid": (128, 96, 160, 192),
               "minik": (128, 96, 160, 192)}

# Sth-Sth V1/V2 (stage1/2/3.yaml + train_stage*.sh, spec §4.2), the intended learning rates (the
# released scripts' optimizer-group bug: `config.reproduce_released_lr_bug`, see `stages`).
STHSTH_STAGES = {
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

# ActivityNet / FCVID / Mini-Kinetics (main_dist.py + README commands, spec §4.3).
ACTNET_STAGES = {
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

# AdaFocusV2 (adafocus_family.md §1.2; official train.sh / README commands): one stage "v2", 50
# epochs, SGD momentum 0.9, cosine; lr = `lr` × the per-module multiplier `mult` (policy
# `stn_lr_ratio`, glancer `global_lr_ratio` (its own head too), focuser 1 (with its heads),
# classifier `classifier_lr_ratio`); `clip` > 0 clips the global gradient norm.
V2_HYPER = {
    "actnet": dict(lr=0.002, batch_size=32, weight_decay=1e-4, extra_epoch=True, clip=0.0,
                   mult=dict(policy=0.1, glancer=0.5, focuser=1.0, classifier=5.0)),
    "sthsth": dict(lr=0.01, batch_size=32, weight_decay=5e-4, extra_epoch=False, clip=20.0,
                   mult=dict(policy=0.01, glancer=0.5, focuser=1.0, classifier=1.0)),
}
V2_HYPER["fcvid"] = V2_HYPER["actnet"]
V2_HYPER["synthetic"] = V2_HYPER["actnet"]
V2_HYPER["minik"] = dict(V2_HYPER["actnet"], lr=0.003, batch_size=48)
