"""Writes colabs/quickstart.ipynb (kept as code so its diff stays readable; run after editing):

    python colabs/make_quickstart.py
"""
import os

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

CELLS = [
    new_markdown_cell(
        "# adafocus_jax quick start\n\n"
        "AdaFocus (Wang et al., ICCV 2021) in JAX/Flax: a cheap glance network sees every frame, a "
        "recurrent policy picks one patch per frame, an expensive local network sees only the patches.\n\n"
        "This notebook builds the official Something-Something model, counts its FLOPs, runs inference, "
        "then trains every stage on the built-in synthetic dataset (cluttered moving digits) and compares "
        "the learned policy with random and centre patches. Everything runs on a CPU runtime."),
    new_code_cell(
        "# On Colab: install the package first (a checkout of this repository):\n"
        "# !git clone <this repository> adafocus_jax && pip install -q -e ./adafocus_jax\n"
        "# import os; os.chdir('adafocus_jax')\n"
        "import os, sys, tempfile\n"
        "# Run from the repository root so `configs/` can be imported.\n"
        "if not os.path.isdir('configs') and os.path.isdir('../configs'):\n"
        "    os.chdir('..')\n"
        "sys.path.insert(0, os.getcwd())\n"
        "import jax, jax.numpy as jnp, numpy as np\n"
        "from adafocus_jax import flops, models\n"
        "print(jax.__version__, jax.devices())"),
    new_markdown_cell("## The official model and its cost\n"
                      "GFLOPs per video are counted from the model (multiply-accumulates of conv, dense "
                      "and GRU layers), the paper's convention: 23.5 / 27.5 / 33.7 for patch 144 / 160 / 176."),
    new_code_cell(
        "from configs import sthv2\n"
        "for patch in (144, 160, 176):\n"
        "    config = sthv2.get_config(f'patch={patch}')\n"
        "    total, per_module = flops.count_gflops(models.create_model(config))\n"
        "    print(f'patch {patch}: {total:.2f} GFLOPs/video', {k: round(v, 2) for k, v in per_module.items()})"),
    new_markdown_cell(
        "## Inference\n"
        "`model.apply(variables, glance_frames, focus_frames)` takes ImageNet-normalised frames "
        "`[B, T, 224, 224, 3]` and returns the logits and the integer top-left corner of the patch per "
        "policy step. Official weights load with `adafocus_jax.convert.load_variables('144x144.pth.tar', "
        "config)`; here a tiny randomly initialised model of the same architecture keeps it fast."),
    new_code_cell(
        "tiny = models.tiny_model_config('sthv2')\n"
        "model = models.create_model(tiny)\n"
        "variables = models.init_variables(model, jax.random.key(0))\n"
        "glance, focus = (jax.random.normal(jax.random.key(i), (2, t, tiny.input_size, tiny.input_size, 3))\n"
        "                 for i, t in ((1, tiny.num_glance_frames), (2, tiny.num_focus_frames)))\n"
        "out = jax.jit(model.apply)(variables, glance, focus)\n"
        "print('logits', out.logits.shape, 'patch offsets (row, col):', np.asarray(out.patch_offsets).tolist())"),
    new_markdown_cell(
        "## Train every stage on the synthetic dataset\n"
        "Stage 0 pre-trains the glance and local networks, stage 1 trains the local network and classifier "
        "on random patches, stage 2 learns the policy with PPO inside one jitted step, stage 3 fine-tunes "
        "the classifier on the learned patches. `QUICK = True` is a smoke run of about a minute; set it to "
        "False for the full benchmark (about 15 minutes on 2 CPU cores)."),
    new_code_cell(
        "QUICK = True\n"
        "from configs import synthetic\n"
        "from adafocus_jax import train\n"
        "config = synthetic.get_config('quick' if QUICK else '')\n"
        "if os.environ.get('ADAFOCUS_NOTEBOOK_SMOKE'):  # the test suite runs 2 steps per stage\n"
        "    config.train.num_steps = 2\n"
        "workdir = tempfile.mkdtemp(prefix='adafocus_synthetic_')\n"
        "state = train.train_and_evaluate(config, workdir)\n"
        "print('final stage step', int(state.step))"),
    new_code_cell(
        "import json\n"
        "from adafocus_jax import benchmark\n"
        "with open(benchmark.benchmark_path(config, workdir)) as f:\n"
        "    results = json.load(f)\n"
        "for name in ('learned', 'random', 'center', 'full_frame'):\n"
        "    print(f\"{name:>10s}: {results[name]['accuracy']:6.1f} %  {results[name]['gflops']:.3f} GFLOPs/video\")"),
]


def main():
    nb = new_notebook(cells=CELLS)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "quickstart.ipynb")
    nbformat.write(nb, path)
    print("wrote", path)


if __name__ == "__main__":
    main()
