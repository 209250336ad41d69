"""Patch modes: where a forward pass takes its patches from, and which layer accepts each one.

One table (`PATCH_MODES`) is the vocabulary of every layer; `patch_modes(user)` lists the modes one
user accepts, in the table's order:

| mode | where the patches come from | model | v2 | recipe | stage_eval | eval |
|---|---|---|---|---|---|---|
| policy | the deterministic policy (Gaussian mean / first argmax) | x | x | x | x | x |
| sample | a sample of the stochastic policy (rng stream "actions") | x | | x | | |
| random | uniformly random patches, the official baseline (stream "patches") | x | x | x | x | x |
| random_grid | uniformly random cells of the grid policy's k×k grid | x | | x | x | x |
| center | the centre patch of every frame | x | x | x | x | x |
| given | offsets passed by the caller (`patch_offsets` `[B, St, 2]`) | x | x | | | |
| target | random patches holding the whole target box (synthetic data) | | | x | | |
| oracle | the patch centred on the target box (synthetic data) | | | | | x |
| glancer | no patches: the glance network alone on whole frames | | | | x | x |
| focuser | no patches: the local network alone on whole frames | | | | x | x |
| none | no patches (the stage-0 single-network losses) | | | x | | |

Users: `model` = `models.AdaFocus.__call__`, `v2` = `models.AdaFocusV2.__call__`, `recipe` = a
stage recipe's training `patch_mode` (`stages`), `stage_eval` = a recipe's `eval_patch_mode`,
`eval` = `evaluate.evaluate_model`. The training step passes a recipe's mode to the model as is,
except "target" (turned into "given" offsets) and "none" (the model's patch path does not run).
"""

USERS = ("model", "v2", "recipe", "stage_eval", "eval")

PATCH_MODES = {
    "policy": ("model", "v2", "recipe", "stage_eval", "eval"),
    "sample": ("model", "recipe"),
    "random": ("model", "v2", "recipe", "stage_eval", "eval"),
    "random_grid": ("model", "recipe", "stage_eval", "eval"),
    "center": ("model", "v2", "recipe", "stage_eval", "eval"),
    "given": ("model", "v2"),
    "target": ("recipe",),
    "oracle": ("eval",),
    "glancer": ("stage_eval", "eval"),
    "focuser": ("stage_eval", "eval"),
    "none": ("recipe",),
}


def patch_modes(user: str) -> tuple[str, ...]:
    """The modes `user` (one of `USERS`) accepts, in the table's order."""
    if user not in USERS:
        raise ValueError(f"patch_modes: unknown user {user!r}; expected one of {USERS}")
    return tuple(mode for mode, users in PATCH_MODES.items() if user in users)
