"""Dataset families: which of the two official code paths (adafocus_v1.md §1) a dataset follows.

* Something-Something V1/V2 (`STHSTH`): TSM backbones, one Gaussian patch per video, logit-sum
  fusion, stages 1-3.
* The ActivityNet family (`ACTNET_FAMILY`: ActivityNet, FCVID, Mini-Kinetics): plain backbones, one
  grid patch per frame, GRU classifier, stage 0 (each backbone alone) then stages 1-3.
* `SYNTHETIC` (the moving-digit benchmark, `configs/synthetic.py`) trains with the ActivityNet-family
  recipe on its own small networks.

`NUM_CLASSES` holds the official datasets' class counts.
"""

STHSTH = ("sthv1", "sthv2")
ACTNET_FAMILY = ("actnet", "fcvid", "minik")
SYNTHETIC = "synthetic"
OFFICIAL_DATASETS = STHSTH + ACTNET_FAMILY
# Every dataset with a training recipe (`stages.add_training_config`).
RECIPE_DATASETS = OFFICIAL_DATASETS + (SYNTHETIC,)
NUM_CLASSES = {"sthv1": 174, "sthv2": 174, "actnet": 200, "fcvid": 239, "minik": 200}

