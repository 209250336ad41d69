"""adafocus_jax.visualize: curves read back from clu's TensorBoard files, their figure, and the
learned-vs-random patch panels (captioned, animated)."""
import io
import time

import numpy as np
import pytest
from clu import metric_writers
from PIL import Image

from adafocus_jax import models, visualize
from adafocus_jax.tools import predict


@pytest.fixture
def run_dir(tmp_path):
    """Scalars as the training loop writes them: stage1 logs first although it sorts after
    stage0_glancer's name; a step written twice; an untagged clu progress scalar."""
    writer = metric_writers.create_default_writer(str(tmp_path))
    writer.write_scalars(1, {"stage1/train_loss": 2.5, "steps_per_sec": 9.0})
    writer.write_scalars(2, {"stage1/train_loss": 2.0})
    writer.write_scalars(2, {"stage1/train_loss": 1.5})          # the last write wins
    writer.write_scalars(3, {"stage1/train_loss": 1.0, "stage1/eval_top1": 40.0})
    writer.flush()
    time.sleep(0.05)
    writer.write_scalars(4, {"stage0_glancer/train_loss": 3.0, "stage0_glancer/eval_top1": 12.5})
    writer.close()
    return str(tmp_path)


def test_training_curves(run_dir, tmp_path_factory):
    curves = visualize.training_curves(run_dir)
    assert list(curves) == ["stage1", "stage0_glancer"]          # the order they logged in
    steps, values = curves["stage1"]["train_loss"]
    assert steps.tolist() == [1, 2, 3] and values.tolist() == [2.5, 1.5, 1.0]
    assert curves["stage1"]["eval_top1"][1].tolist() == [40.0]
    assert sorted(curves["stage0_glancer"]) == ["eval_top1", "train_loss"]
    assert curves["stage0_glancer"]["train_loss"][0].tolist() == [4]
    assert curves["stage0_glancer"]["eval_top1"][1].tolist() == [12.5]
    assert visualize.read_scalars(run_dir)["steps_per_sec"][1].tolist() == [9.0]
    empty = str(tmp_path_factory.mktemp("empty"))
    with pytest.raises(FileNotFoundError, match=f"{empty}: no TensorBoard event file"):
        visualize.training_curves(empty)


def test_plot_training_curves(run_dir):
    import matplotlib.pyplot as plt
    fig = visualize.plot_training_curves(run_dir)
    try:
        axes = np.asarray(fig.axes).reshape(2, 2)
        assert [ax.get_title() for ax in axes[0]] == ["stage1", "stage0_glancer"]
        x, y = axes[0][0].lines[0].get_data()
        assert list(x) == [1, 2, 3] and list(y) == [2.5, 1.5, 1.0]
        x, y = axes[1][1].lines[0].get_data()
        assert list(x) == [4] and list(y) == [12.5]
        assert axes[1][0].get_ylabel() == "eval_top1"
    finally:
        plt.close(fig)
    fig = visualize.plot_training_curves(run_dir, metrics=("eval_top1",), stages=["stage1"])
    assert len(fig.axes) == 1 and list(fig.axes[0].lines[0].get_ydata()) == [40.0]
    plt.close(fig)
    with pytest.raises(ValueError, match=r"no stage \['stage3'\]"):
        visualize.plot_training_curves(run_dir, stages=["stage3"])


def _red(panel):
    return (panel[..., 0] > 200) & (panel[..., 1] < 60) & (panel[..., 2] < 60)


def test_compare_patches_draws_each_patch_in_its_panel():
    config = models.tiny_model_config("actnet")          # per-frame policy: one patch per frame
    model = models.create_model(config)
    s, p, t = int(config.input_size), int(config.patch_size), int(config.num_glance_frames)
    rng = np.random.default_rng(0)
    example = {"glance": rng.integers(0, 120, (t, s, s, 3)).astype(np.uint8)}
    learned = np.array([[0, 0]] + [[s - p, s - p]] * (t - 1))
    out = {"patch_offsets": learned,
           "glance_view": rng.integers(0, 120, (t, config.glance_size, config.glance_size, 3))
           .astype(np.uint8)}
    random = visualize.random_patch_offsets(model, seed=3, num_videos=5)
    assert random.shape == (5, t, 2) and random.min() >= 0 and random.max() <= s - p
    assert not np.array_equal(random, visualize.random_patch_offsets(model, seed=4, num_videos=5))
    np.testing.assert_array_equal(random, visualize.random_patch_offsets(model, 3, 5))

    frames = visualize.compare_patches(example, out, model, random_offsets=random[0])
    gap, top = predict.PANEL_GAP, visualize.CAPTION_HEIGHT
    assert len(frames) == t and frames[0].shape == (s + top, 3 * s + 2 * gap, 3)
    for k, frame in enumerate(frames):
        for panel, offsets in ((1, learned), (2, random[0])):
            view = frame[top:, panel * (s + gap):panel * (s + gap) + s]
            row, col = offsets[k]
            outline = np.zeros((s, s), bool)
            outline[row:row + p, col:col + p] = True
            outline[row + 2:row + p - 2, col + 2:col + p - 2] = False
            assert _red(view)[outline].all() and not _red(view)[~outline].any(), (k, panel)
        assert not _red(frame[top:, :s]).any()                    # no box on the glance panel
        # The captions are drawn above their panels: white text in each panel's strip.
        for panel in range(3):
            strip = frame[:top, panel * (s + gap):panel * (s + gap) + s]
            assert (strip.min(-1) > 200).sum() > 10, panel
    with pytest.raises(ValueError, match=r"more_offsets of shape \(2, 2\)"):
        predict.overlay_frames(example, out, config, [np.zeros((2, 2), int)])


def test_encode_gif_round_trip():
    frames = [np.full((8, 12, 3), v, np.uint8) for v in (0, 128, 255)]
    image = Image.open(io.BytesIO(predict.encode_gif(frames, fps=5)))
    assert image.format == "GIF" and image.n_frames == 3 and image.size == (12, 8)
    assert image.info["duration"] == 200 and image.info["loop"] == 0
    image.seek(1)
    assert abs(int(np.asarray(image.convert("RGB"))[0, 0, 0]) - 128) <= 2
