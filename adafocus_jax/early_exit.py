"""Real early exit: "AdaFocus+" for the per-frame (ActivityNet-family) model, and Uni-AdaFocus's
17 exits.

The per-frame model is causal: frame t's glance features, policy step t, the local network on
patch t and GRU classifier step t need nothing from later frames. So inference can run frame by
frame and stop a video as soon as its prediction is confident: after step t a video exits when its
largest softmax probability reaches `thresholds[t]` (the last step always exits). Unlike V2 /
Uni-AdaFocus, which compute every exit and report expected FLOPs, the frames after the exit are
never processed.

    runner = OnlineRunner(model, variables)
    conf = step_confidences(step_logits)                       # [N, T] from the full model
    fit = fit_thresholds(conf_val, step_gflops(model), budget) # geometric exit distribution
    out = runner.run(frames, fit.thresholds, batch_size=50)    # exit step, prediction per video

**Uni-AdaFocus** (`UniOnlineRunner`, ActivityNet family): its exits are those of the official
`ops/early_exit_uni_adafocus.py`, the last 1 + K of the G + K step logits: exit 0 after the glance
stage alone (the last global head), exit i after local frame i (local head i-1), K = 16. The
runner runs the glance network on the G glance frames and exit 0; the videos that go on run both
policies once (which K frames, which box in each), then the local network and the exit
classifier one chosen frame per step, in the order of the chosen frames; a video's frames after
its exit are never sent to the device. Costs per step: `uni_step_gflops` (step 0 the glance
stage, step 1 adds the policies). **Uni-AdaFocus-TSM** (`UniTSMOnlineRunner`) has the official
TSM variant's 2 exits: the glance stage alone, or the full model (TSM mixes the K chosen frames,
so they go through the local network together); a video that exits at 0 sends no candidate frame
to the device. `make_runner(model, variables)` picks the runner; everything below is shared.
(The official code ranks videos by the largest raw logit; here, as for the
per-frame model, by the largest softmax probability.)

    runner = make_runner(model, variables)      # OnlineRunner | UniOnlineRunner | UniTSM...
    conf = step_confidences(softmax(step_logits)[:, runner.exit_positions])    # [N, T]
    fit = fit_thresholds(conf_val, runner.step_gflops(), budget)

**Thresholds for a budget** (the budgeted procedure of MSDNet, used by V2 and Uni): the fraction
of videos exiting at step k is q_k ∝ p^k (k = 0..T-1), p chosen by bisection so that the expected
cost Σ q_k · cost_k equals the budget (cost_k: GFLOPs of steps 0..k). On the fitting split, step
k's threshold is the confidence of the ⌊N·q_k⌋-th most confident video among those still running,
so that ⌊N·q_k⌋ of them exit there.

**Batching.** Videos of a batch exit at different steps. `run_exit_loop`, the loop of both
runners' `run`, supports:
  * "compact": after each step the still-running videos are gathered into a smaller batch
    (rows and GRU states), padded up to the next size of a fixed set (B, then powers of two
    below B), so the work follows the running videos and at most a handful of shapes compile;
  * "masked": the batch stays whole; steps stop only when every video has exited (saves only
    when a whole batch is done early);
  * "none": every video runs every step (the stepwise pipeline without exit, for reference).
Either way each step needs the host to see the confidences (one small device→host transfer per
step; Uni also reads the chosen frames and boxes once, after exit 0), and the data of frame t is
sent to the device only for the videos still running.
"""

import dataclasses
import logging
import math
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from adafocus_jax.data.transforms import normalize_jnp
from adafocus_jax.parallel import compiler_options
from adafocus_jax.rl import deterministic_actions

def _jit(fn):
    """`jax.jit` with the library's XLA options (`parallel.compiler_options`)."""
    return jax.jit(fn, compiler_options=compiler_options())


COMPACTION = ("compact", "masked", "none")


def check_online(model_config) -> None:
    """Raises ValueError unless the model runs frame by frame (per-frame policy, GRU classifier,
    no temporal shift): the ActivityNet / FCVID / Mini-K / synthetic models."""
    c = model_config
    problems = []
    if not c.policy.per_frame:
        problems.append("config.model.policy.per_frame is False (one patch per video)")
    if c.classifier.kind != "gru":
        problems.append(f"config.model.classifier.kind is {c.classifier.kind!r}, not 'gru'")
    if c.glancer.temporal_shift or c.focuser.temporal_shift:
        problems.append("a network uses the temporal shift (needs every frame at once)")
    if problems:
        raise ValueError("early exit needs a frame-by-frame (ActivityNet-family) model: "
                         + "; ".join(problems))


def _online_step(module, frames, policy_state, classifier_state):
    """One frame of every video: `frames` uint8 `[B, S, S, 3]`, states `[B, H_p]`, `[B, H_c]` →
    (policy_state, classifier_state, probabilities `[B, C]`, patch offsets `[B, 2]`)."""
    x = normalize_jnp(frames)[:, None]                                  # [B, 1, S, S, 3]
    maps, glance_out = module.glance(x, False)
    dist_params, _, policy_state = module.policy(module.policy_states(maps), False,
                                                 initial_state=policy_state, return_state=True)
    offsets = module.action_offsets(deterministic_actions(module.config.policy.kind, dist_params))
    local = module.local_features(module.crop(x, offsets), False)       # [B, 1, F]
    classifier = module.classifier
    classifier_state = classifier.gru.step(
        classifier_state, jnp.concatenate([glance_out, local], axis=-1)[:, 0])
    logits = classifier.fc(classifier_state).astype(jnp.float32)
    return policy_state, classifier_state, jax.nn.softmax(logits, axis=-1), offsets[:, 0]


def _abstract_variables(model):
    """The model's variables as shapes (nothing computed)."""
    from adafocus_jax import models as models_lib
    return jax.eval_shape(lambda: model.init({"params": jax.random.key(0)},
                                             *models_lib.dummy_inputs(model.config)))


def _traced_gflops(fn, *args) -> float:
    """GMACs of `fn(*args)`, traced abstractly (`adafocus_jax.flops.count_macs`)."""
    from adafocus_jax import flops as flops_lib
    with flops_lib.count_macs() as totals:
        # A fresh function: JAX caches traces per function, and a cached one counts nothing.
        jax.eval_shape(lambda *a: fn(*a), *args)
    return totals["macs"] / 1e9


def step_gflops(model) -> np.ndarray:
    """GMACs of one online step per video, `[T]` (all equal: one frame through every network),
    counted with `adafocus_jax.flops.count_macs` on the step itself."""
    cfg = model.config
    s = cfg.input_size
    frames = jax.ShapeDtypeStruct((1, s, s, 3), jnp.uint8)
    states = (jax.ShapeDtypeStruct((1, cfg.policy.hidden_dim), jnp.float32),
              jax.ShapeDtypeStruct((1, cfg.classifier.hidden_dim), jnp.float32))
    macs = _traced_gflops(lambda v, f, a, b: model.apply(v, f, a, b, method=_online_step),
                          _abstract_variables(model), frames, *states)
    return np.full(int(cfg.num_glance_frames), macs)


def uni_step_gflops(model) -> np.ndarray:
    """GMACs per video of each step of Uni-AdaFocus's real early exit, `[1 + K]` (17), counted
    with `adafocus_jax.flops.count_macs` on the steps `UniOnlineRunner` runs:

      step 0: the glance network on the G glance frames, the global MLP and the last global head
        (exit 0, glance only; no policy runs for a video that exits here);
      step 1: both policies (temporal and spatial, on the glance outputs) + local frame 1;
      step i ≥ 2: local frame i (its crop, the local network, the local MLP and head i).

    The official cost table (`ops/early_exit_uni_adafocus.py`, exit k = 16 glance frames + k
    local frames, policies from k = 1 on) has the same structure; it also counts all 16 global
    heads at every exit, the runner computes only the last one (15 · hidden · C MACs less).
    """
    cfg = model.config
    s, g, k = cfg.input_size, int(cfg.num_glance_frames), int(cfg.num_focus_frames)
    hidden = int(cfg.classifier.hidden_dim)
    variables = _abstract_variables(model)
    f32 = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)   # noqa: E731
    glance_fn = lambda v, x: model.apply(v, x, method="exit_glance")  # noqa: E731
    glance = jax.eval_shape(glance_fn, variables, f32(1, g, s, s, 3))
    costs = np.full(1 + k, _traced_gflops(
        lambda v, *a: model.apply(v, 0, *a, method="exit_local"), variables,
        f32(1, s, s, 3), f32(1, 4), f32(1, hidden), f32(1, hidden)))
    costs[0] = _traced_gflops(glance_fn, variables, f32(1, g, s, s, 3))
    costs[1] += _traced_gflops(lambda v, m, p: model.apply(v, m, p, method="exit_policy"),
                               variables, glance["maps"], glance["pooled"])
    return costs


def step_confidences(step_probabilities: np.ndarray) -> np.ndarray:
    """`[N, T, C]` per-step probabilities → `[N, T]` max softmax (the exit criterion)."""
    return np.asarray(step_probabilities).max(axis=-1)


@dataclasses.dataclass(frozen=True)
class ExitFit:
    """Thresholds fitted for a budget.

    Attributes:
      thresholds: `[T]` max-softmax thresholds (the last is -inf: every video exits there).
      exit_fractions: `[T]` the geometric target q_k.
      p: the ratio of the geometric distribution.
      budget: the target mean GFLOPs per video.
      expected_gflops: Σ q_k · cost_k (≈ budget).
    """
    thresholds: np.ndarray
    exit_fractions: np.ndarray
    p: float
    budget: float
    expected_gflops: float


def geometric_fractions(p: float, num_steps: int) -> np.ndarray:
    """q_k ∝ p^k, k = 0..T-1, normalised (computed in log space: any p > 0)."""
    logq = np.log(p) * np.arange(num_steps)
    q = np.exp(logq - logq.max())
    return q / q.sum()


def fit_thresholds(confidences: np.ndarray, step_costs: Sequence[float],
                   budget: float) -> ExitFit:
    """Thresholds on `confidences` `[N, T]` (fitting split) for a mean cost of `budget`.

    `step_costs[k]` is the cost of step k alone; exiting after step k costs the sum of steps
    0..k. Budgets outside [cost of step 0, cost of all steps] are clipped to that range.
    """
    conf = np.asarray(confidences, np.float64)
    n, t = conf.shape
    cumulative = np.cumsum(np.asarray(step_costs, np.float64))
    if cumulative.shape != (t,):
        raise ValueError(f"step_costs has {len(step_costs)} entries for {t} steps")
    target = float(np.clip(budget, cumulative[0], cumulative[-1]))

    def expected(log_p):
        return float(geometric_fractions(math.exp(log_p), t) @ cumulative)

    lo, hi = -50.0, 50.0          # expected() increases with p
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if expected(mid) < target:
            lo = mid
        else:
            hi = mid
    p = math.exp(0.5 * (lo + hi))
    q = geometric_fractions(p, t)
    thresholds = np.full(t, -np.inf)
    running = np.ones(n, bool)
    for k in range(t - 1):
        count = int(math.floor(n * q[k] + 1e-9))
        candidates = np.where(running)[0]
        if count <= 0 or candidates.size == 0:
            thresholds[k] = np.inf
            continue
        order = candidates[np.argsort(-conf[candidates, k], kind="stable")]
        count = min(count, order.size)
        thresholds[k] = conf[order[count - 1], k]
        running[conf[:, k] >= thresholds[k]] = False
    return ExitFit(thresholds=thresholds, exit_fractions=q, p=p, budget=float(budget),
                   expected_gflops=float(q @ cumulative))


def simulate_exit(confidences: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """Offline: the exit step `[N]` of each video (first k with confidence ≥ threshold k)."""
    conf = np.asarray(confidences)
    passed = conf >= np.asarray(thresholds)[None, :]
    passed[:, -1] = True
    return np.argmax(passed, axis=1)


def count_videos(videos) -> int:
    """N of `videos`: frames `[N, ...]` or a tuple of such arrays (the TSM variant's glance and
    candidate frames)."""
    return len(videos[0] if isinstance(videos, tuple) else videos)


def first_videos(videos, n: int):
    """The first `n` videos of `videos` (an array or a tuple of arrays, `count_videos`)."""
    return tuple(v[:n] for v in videos) if isinstance(videos, tuple) else videos[:n]


def padded_batches(frames, batch_size: int):
    """Yields (chunk `[batch_size, ...]`, n real rows) over `frames` `[N, ...]` (or a tuple of
    such arrays: a tuple of chunks) in order; the last chunk is padded with copies of its first
    row (so every call has one shape)."""
    arrays = frames if isinstance(frames, tuple) else (frames,)
    for start in range(0, len(arrays[0]), batch_size):
        chunks = [a[start:start + batch_size] for a in arrays]
        n = len(chunks[0])
        if n < batch_size:
            chunks = [np.concatenate([c, np.repeat(c[:1], batch_size - n, 0)]) for c in chunks]
        yield (tuple(chunks) if isinstance(frames, tuple) else chunks[0]), n


def _buckets(batch_size: int) -> list[int]:
    sizes = {batch_size}
    size = 1
    while size < batch_size:
        sizes.add(size)
        size *= 2
    return sorted(sizes)


def _pad_rows(ids: np.ndarray, rows: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """`ids` and their state `rows` padded to `size` (copies of the first video, state row 0):
    every step call then has one of a few shapes."""
    pad = size - len(ids)
    return (np.concatenate([ids, np.full(pad, ids[0])]),
            np.concatenate([rows, np.zeros(pad, rows.dtype)]).astype(np.int32))


def exit_thresholds(thresholds: Sequence[float], num_steps: int, compaction: str) -> np.ndarray:
    """The `[T]` thresholds a loop uses: checked, the last -inf (every video exits there),
    all others +inf for compaction "none"."""
    if compaction not in COMPACTION:
        raise ValueError(f"compaction must be one of {COMPACTION}, got {compaction!r}")
    thresholds = np.asarray(thresholds, np.float64).copy()
    if thresholds.shape != (num_steps,):
        raise ValueError(f"thresholds must have {num_steps} entries, got {thresholds.shape}")
    if compaction == "none":
        thresholds[:] = np.inf
    thresholds[-1] = -np.inf
    return thresholds


def run_exit_loop(num_videos: int, num_steps: int, thresholds: Sequence[float],
                  batch_size: int, compaction: str, step: Callable,
                  record: Callable | None = None) -> dict[str, Any]:
    """The early-exit loop shared by the runners: batches of `batch_size` videos, step by step,
    each video stopping at its first step whose max probability reaches `thresholds[t]`.

    Args:
      num_videos: N; num_steps: T (exits); thresholds: `[T]` (the last is forced to -inf;
        compaction "none" sets all others to +inf).
      compaction: "compact" | "masked" | "none" (module docstring).
      step: `step(t, ids, rows, states, num_real) -> (states, probabilities [size, C], extra)`
        runs step t for the videos `ids` `[size]` (global indices; rows past `num_real` are
        padding, copies of the first video), whose previous states (`states` as the previous
        call returned them; None at t = 0) are at `rows` `[size]` int32; `extra` is an array
        `[size, ...]` or None.
      record: `record(t, video ids, extra rows)` for the videos still running at step t.

    Returns:
      {"prediction" `[N]`, "exit_step" `[N]`, "confidence" `[N]`, "rows_processed"} (video-steps
      computed, padding included).
    """
    thresholds = exit_thresholds(thresholds, num_steps, compaction)
    prediction = np.zeros(num_videos, np.int64)
    exit_step = np.zeros(num_videos, np.int64)
    confidence = np.zeros(num_videos, np.float32)
    buckets = _buckets(batch_size)
    rows_processed = 0
    for start in range(0, num_videos, batch_size):
        batch_ids = np.arange(start, min(start + batch_size, num_videos))
        m = len(batch_ids)
        states = None
        alive = np.ones(m, bool)        # per video of the batch: still running
        carry_rows = np.arange(m)       # compact: row in `states` of each running video
        for t in range(num_steps):
            if compaction == "compact":
                members = np.where(alive)[0]     # only the running videos, compacted
                size = next(b for b in buckets if b >= len(members))
                rows = carry_rows
            else:
                members = np.arange(m)           # the whole batch, finished rows ignored
                size = batch_size
                rows = np.arange(m)
            k = len(members)
            take, rows = _pad_rows(members, rows, size)
            states, probs, extra = step(t, batch_ids[take], rows, states, k)
            rows_processed += size
            probs, extra = jax.device_get((probs, extra))
            live = alive[members]
            conf, pred = probs[:k].max(-1), probs[:k].argmax(-1)
            done = live & (conf >= thresholds[t])
            finished = batch_ids[members[done]]
            prediction[finished] = pred[done]
            confidence[finished] = conf[done]
            exit_step[finished] = t
            if record is not None and extra is not None:
                record(t, batch_ids[members[live]], np.asarray(extra)[:k][live])
            alive[members[done]] = False
            carry_rows = np.where(~done[:k])[0] if compaction == "compact" else carry_rows
            if not alive.any():
                break
    return {"prediction": prediction, "exit_step": exit_step, "confidence": confidence,
            "rows_processed": rows_processed}


def _full_predictions(fn, variables, frames: np.ndarray, batch_size: int) -> np.ndarray:
    """Predicted class `[N]` of the all-frames inference `fn` (`inference.predict_fn`) on uint8
    frames `[N, ...]`, in batches of `batch_size` (the last padded)."""
    preds = []
    for chunk, n in padded_batches(frames, batch_size):
        out = fn(variables, *(chunk if isinstance(chunk, tuple) else (chunk,)))
        preds.append(np.asarray(jnp.argmax(out["probabilities"], -1))[:n])
    return np.concatenate(preds)


class OnlineRunner:
    """Frame-by-frame inference of a per-frame AdaFocus model with real early exit.

    Args:
      model: an `AdaFocus` module (ActivityNet family, see `check_online`).
      variables: `{"params", "batch_stats"}`.
    """

    title = "AdaFocus+ early exit"

    def __init__(self, model, variables: Mapping):
        check_online(model.config)
        self.model = model
        self.variables = _device_variables(variables)
        cfg = model.config
        self.num_steps = int(cfg.num_glance_frames)
        self.exit_positions = np.arange(self.num_steps)   # exit t = the full model's step t
        self.hidden = (int(cfg.policy.hidden_dim), int(cfg.classifier.hidden_dim))

        def step(variables, frames, rows, policy_state, classifier_state):
            # Gather the rows still running (compaction) from the previous step's states.
            return model.apply(variables, frames, policy_state[rows], classifier_state[rows],
                               method=_online_step)

        self._step = _jit(step)
        from adafocus_jax import inference
        self._full = _jit(inference.predict_fn(model))

    def step_gflops(self) -> np.ndarray:
        """`[T]` GMACs per video of each step (`step_gflops`)."""
        return step_gflops(self.model)

    @staticmethod
    def local_frames(exit_step: np.ndarray) -> np.ndarray:
        """Frames through the local network of videos exiting at `exit_step`: one per step."""
        return np.asarray(exit_step) + 1

    def full(self, frames: np.ndarray, batch_size: int) -> np.ndarray:
        """The ordinary inference (all frames at once): predicted class `[N]` of uint8 frames
        `[N, T, S, S, 3]`, in batches of `batch_size` (the last padded)."""
        return _full_predictions(self._full, self.variables, frames, batch_size)

    def run(self, frames: np.ndarray, thresholds: Sequence[float], batch_size: int,
            compaction: str = "compact") -> dict[str, np.ndarray]:
        """Early-exit inference of uint8 frames `[N, T, S, S, 3]` in batches of `batch_size`.

        Returns:
          {"prediction" `[N]`, "exit_step" `[N]` (0-based), "confidence" `[N]`,
           "patch_offsets" `[N, T, 2]` (-1 after the exit), "rows_processed": int (video-steps
           computed, padding included)}.
        """
        offsets_all = np.full((len(frames), self.num_steps, 2), -1, np.int32)

        def step(t, ids, rows, states, num_real):
            if states is None:
                states = tuple(jnp.zeros((batch_size, h), jnp.float32) for h in self.hidden)
            p_state, c_state, probs, offs = self._step(self.variables, frames[ids, t], rows,
                                                       *states)
            return (p_state, c_state), probs, offs

        def record(t, ids, offs):
            offsets_all[ids, t] = offs

        out = run_exit_loop(len(frames), self.num_steps, thresholds, batch_size, compaction,
                            step, record)
        out["patch_offsets"] = offsets_all
        return out


def check_uni_online(model_config, tsm: bool = False) -> None:
    """Raises ValueError unless the model is the per-frame (ActivityNet-family) Uni-AdaFocus, or
    with `tsm` its TSM variant (`policy.per_frame = False`)."""
    c = model_config
    name = "UniTSMOnlineRunner" if tsm else "UniOnlineRunner"
    if c.get("version", "v1") != "uni":
        raise ValueError(f"{name} needs config.model.version = 'uni', got "
                         f"{c.get('version', 'v1')!r}")
    per_frame = c.policy.get("per_frame", True)
    if tsm and per_frame:
        raise ValueError("UniTSMOnlineRunner: the model is the per-frame (ActivityNet-family) "
                         "Uni-AdaFocus; use UniOnlineRunner (its 17 exits)")
    if not tsm and (not per_frame or c.glancer.get("temporal_shift") or
                    c.focuser.get("temporal_shift")):
        raise ValueError("UniOnlineRunner: the 17 exits are those of the per-frame "
                         "(ActivityNet-family) Uni-AdaFocus; the TSM variant needs all its "
                         "frames at once: UniTSMOnlineRunner (2 exits)")


def _softmax(logits: jnp.ndarray) -> jnp.ndarray:
    return jax.nn.softmax(logits.astype(jnp.float32), -1)


def _uni_glance_and_policy(model, state: str):
    """The jitted glance stage and policy call of both Uni-AdaFocus runners:
    `glance(variables, frames) -> ((maps, pooled, exit_glance()[state]), exit-0 probabilities
    [B, C])`; `policy(variables, maps, pooled, rows) -> (frame indices [B, K], actions)`."""

    def glance(variables, frames):
        out = model.apply(variables, normalize_jnp(frames), method="exit_glance")
        return (out["maps"], out["pooled"], out[state]), _softmax(out["logits"])

    def policy(variables, maps, pooled, rows):
        return model.apply(variables, maps[rows], pooled[rows], method="exit_policy")

    return _jit(glance), _jit(policy)


class UniOnlineRunner:
    """Uni-AdaFocus inference with real early exit at its 1 + K exits (17 officially).

    Per batch: the glance network on the G glance frames, the global MLP and the last global
    head (exit 0 = step_logits[:, G - 1]); the videos that go on run both policies once (frame
    choice and box per chosen frame; their frame indices and actions are read on the host), then
    local frame i = 0…K-1 in the order of the chosen frames (crop, local network, local MLP with
    its running max, head i: exit i + 1 = step_logits[:, G + i]). A video stops at its first
    exit whose max softmax reaches the threshold; its later chosen frames are never sent to the
    device. Batching, thresholds and timing are the per-frame model's (`run_exit_loop`).

    Args:
      model: a `UniAdaFocus` module (ActivityNet family, `check_uni_online`).
      variables: `{"params", "batch_stats"}`.
    """

    title = "Uni-AdaFocus early exit"

    def __init__(self, model, variables: Mapping):
        from adafocus_jax import inference
        from adafocus_jax.models import uni as uni_models
        check_uni_online(model.config)
        self.model = model
        self.variables = _device_variables(variables)
        cfg = model.config
        g, self.num_focus = int(cfg.num_glance_frames), int(cfg.num_focus_frames)
        self.num_steps = 1 + self.num_focus
        self.exit_positions = np.arange(g - 1, g + self.num_focus)
        self.hidden = int(cfg.classifier.hidden_dim)
        self.glance_frames = np.asarray(
            uni_models.glance_indices(int(cfg.num_candidate_frames), g, 1))[0]
        self.frame_shape = (int(cfg.num_candidate_frames), cfg.input_size, cfg.input_size, 3)
        self._glance, self._policy = _uni_glance_and_policy(model, "global_state")

        def local(variables, index, frame, actions, rows, running, global_state):
            running, logits, top = model.apply(
                variables, index, normalize_jnp(frame), actions, running[rows],
                global_state[rows], method="exit_local")
            return (running, global_state[rows]), _softmax(logits), top

        self._local = _jit(local)
        self._full = _jit(inference.predict_fn(model))

    def step_gflops(self) -> np.ndarray:
        """`[1 + K]` GMACs per video of each step (`uni_step_gflops`)."""
        return uni_step_gflops(self.model)

    @staticmethod
    def local_frames(exit_step: np.ndarray) -> np.ndarray:
        """Frames through the local network of videos exiting at `exit_step` (exit 0: none)."""
        return np.asarray(exit_step)

    def _check(self, frames: np.ndarray) -> None:
        if frames.ndim != 5 or frames.shape[1:] != self.frame_shape:
            raise ValueError(f"UniOnlineRunner: frames must be uint8 [N, *{self.frame_shape}] "
                             f"(the candidate frames), got {frames.shape}")

    def full(self, frames: np.ndarray, batch_size: int) -> np.ndarray:
        """The ordinary inference (`__call__`, every exit computed): predicted class `[N]` of
        uint8 candidate frames `[N, N_c, S, S, 3]`, in batches of `batch_size`."""
        self._check(frames)
        return _full_predictions(self._full, self.variables, frames, batch_size)

    def run(self, frames: np.ndarray, thresholds: Sequence[float], batch_size: int,
            compaction: str = "compact") -> dict[str, np.ndarray]:
        """Early-exit inference of uint8 candidate frames `[N, N_c, S, S, 3]`.

        Args:
          thresholds: `[1 + K]` max-softmax thresholds of the exits (the last forced to -inf).

        Returns:
          {"prediction" `[N]`, "exit_step" `[N]` (0 = glance only, i = after i local frames),
           "confidence" `[N]`, "frame_indices" `[N, K]` (candidates that went through the
           local network, -1 after the exit), "patch_offsets" `[N, K, 2]` (their boxes' int
           top-left, -1 after the exit), "rows_processed" (video-steps, padding included)}.
        """
        self._check(frames)
        n, k = len(frames), self.num_focus
        chosen = np.zeros((n, k), np.int32)             # the policy's frames, per video
        actions = np.zeros((n, k, 4), np.float32)
        frame_indices = np.full((n, k), -1, np.int32)
        offsets_all = np.full((n, k, 2), -1, np.int32)
        no_local = jnp.full((batch_size, self.hidden), -jnp.inf, jnp.float32)

        def step(t, ids, rows, states, num_real):
            if t == 0:
                states, probs = self._glance(
                    self.variables, frames[ids[:, None], self.glance_frames[None, :]])
                return states, probs, None
            if t == 1:     # the policies, once, for the videos past exit 0
                maps, pooled, global_state = states
                idx, act = jax.device_get(self._policy(self.variables, maps, pooled, rows))
                chosen[ids[:num_real]], actions[ids[:num_real]] = idx[:num_real], act[:num_real]
                states = (no_local, global_state)
            i = t - 1
            states, probs, top = self._local(self.variables, np.int32(i),
                                             frames[ids, chosen[ids, i]], actions[ids, i],
                                             rows, *states)
            return states, probs, top

        def record(t, ids, top):
            if t > 0:
                frame_indices[ids, t - 1] = chosen[ids, t - 1]
                offsets_all[ids, t - 1] = np.floor(top).astype(np.int32)

        out = run_exit_loop(n, self.num_steps, thresholds, batch_size, compaction, step, record)
        out.update(frame_indices=frame_indices, patch_offsets=offsets_all)
        return out


class UniTSMOnlineRunner:
    """Uni-AdaFocus-TSM inference with real early exit at its 2 exits (the official TSM
    variant's: glance only, or the full model).

    Per batch: the TSM glance network on the G glance frames and exit 0 (its "reg" head averaged
    over frames = step_logits[:, 0]); the videos that go on run both policies (which K of the N
    candidates, one box per video; indices read on the host), then only their K chosen
    candidates are sent to the device, cropped and run through the TSM local network together
    (TSM mixes the K frames, so there is no exit between them) and fused with the glance logits
    (exit 1 = the prediction). A video that exits at 0 sends no candidate frame. With
    compaction "compact" the videos that go on are pooled across input batches, so step 1 runs
    in full batches (`_run_pooled`); "masked" and "none" are `run_exit_loop`'s.

    `videos` are a tuple (glance frames `[N, G, S, S, 3]`, candidates `[N, N_c, S, S, 3]`),
    uint8, as the loader makes them (`load_split`).

    Args:
      model: a `UniAdaFocus` module with `policy.per_frame = False` (`check_uni_online`).
      variables: `{"params", "batch_stats"}`.
    """

    title = "Uni-AdaFocus-TSM early exit"
    num_steps = 2
    exit_positions = np.arange(2)

    def __init__(self, model, variables: Mapping):
        from adafocus_jax import inference
        check_uni_online(model.config, tsm=True)
        self.model = model
        self.variables = _device_variables(variables)
        cfg = model.config
        s = cfg.input_size
        self.num_focus = int(cfg.num_focus_frames)
        self.shapes = ((int(cfg.num_glance_frames), s, s, 3),
                       (int(cfg.num_candidate_frames), s, s, 3))
        self._glance, self._policy = _uni_glance_and_policy(model, "glance_logits")

        def local(variables, frames, actions, glance_logits, rows, indices):
            logits, top = model.apply(variables, normalize_jnp(frames), actions,
                                      glance_logits[rows], method="exit_tsm_local")
            # extra rows for `record`: the chosen candidates [B, K], then the box's top-left [B, 2]
            top = jnp.floor(top[:, 0]).astype(jnp.int32)
            return _softmax(logits), jnp.concatenate([indices.astype(jnp.int32), top], axis=1)

        self._local = _jit(local)
        self._full = _jit(inference.predict_fn(model))

    def step_gflops(self) -> np.ndarray:
        """`[2]` GMACs per video of each step (`uni_tsm_step_gflops`)."""
        return uni_tsm_step_gflops(self.model)

    def local_frames(self, exit_step: np.ndarray) -> np.ndarray:
        """Frames through the local network of videos exiting at `exit_step` (0 or K)."""
        return np.asarray(exit_step) * self.num_focus

    def _check(self, videos):
        ok = (isinstance(videos, tuple) and len(videos) == 2 and
              all(np.ndim(v) == 5 and tuple(v.shape[1:]) == shape
                  for v, shape in zip(videos, self.shapes)) and len(videos[0]) == len(videos[1]))
        if not ok:
            got = ([np.shape(v) for v in videos] if isinstance(videos, tuple)
                   else np.shape(videos))
            raise ValueError("UniTSMOnlineRunner: videos must be a tuple of uint8 glance frames "
                             f"[N, *{self.shapes[0]}] and candidates [N, *{self.shapes[1]}], "
                             f"got {got}")
        return videos

    def full(self, videos, batch_size: int) -> np.ndarray:
        """The ordinary inference (`__call__`): predicted class `[N]` of `videos`, in batches of
        `batch_size`."""
        return _full_predictions(self._full, self.variables, self._check(videos), batch_size)

    def run(self, videos, thresholds: Sequence[float], batch_size: int,
            compaction: str = "compact") -> dict[str, np.ndarray]:
        """Early-exit inference of `videos` (glance frames, candidates).

        Args:
          thresholds: `[2]` max-softmax thresholds (the last forced to -inf).

        Returns:
          {"prediction" `[N]`, "exit_step" `[N]` (0 = glance only, 1 = full), "confidence"
           `[N]`, "frame_indices" `[N, K]` (candidates through the local network, -1 for a video
           that exited at 0), "patch_offsets" `[N, 1, 2]` (the box's int top-left, or -1),
           "rows_processed"}.
        """
        glance, candidates = self._check(videos)
        n, k = len(glance), self.num_focus
        frame_indices = np.full((n, k), -1, np.int32)
        offsets_all = np.full((n, 1, 2), -1, np.int32)

        def rest(ids, rows, states):     # step 1 of the videos `ids`, glance states at `rows`
            maps, pooled, glance_logits = states
            idx, actions = jax.device_get(self._policy(self.variables, maps, pooled, rows))
            return self._local(self.variables, candidates[ids[:, None], idx], actions,
                               glance_logits, rows, idx)

        def step(t, ids, rows, states, num_real):
            if t == 0:
                states, probs = self._glance(self.variables, glance[ids])
                return states, probs, None
            return (None, *rest(ids, rows, states))

        def record(t, ids, extra):
            if t == 1:
                frame_indices[ids], offsets_all[ids, 0] = extra[:, :k], extra[:, k:]

        if compaction == "compact":
            out = self._run_pooled(glance, thresholds, batch_size, rest, record)
        else:
            out = run_exit_loop(n, self.num_steps, thresholds, batch_size, compaction, step,
                                record)
        out.update(frame_indices=frame_indices, patch_offsets=offsets_all)
        return out

    def _run_pooled(self, glance: np.ndarray, thresholds: Sequence[float], batch_size: int,
                    rest: Callable, record: Callable) -> dict[str, Any]:
        """"compact" with two exits: exit 0 batch by batch; the videos that go on wait in a pool
        (their glance states stay on the device) and run step 1 in full batches of
        `batch_size` gathered across input batches, so only the last step-1 batch is short
        (padded to a `_buckets` size). Same outputs as `run_exit_loop`'s."""
        thresholds = exit_thresholds(thresholds, self.num_steps, "compact")
        n = len(glance)
        prediction = np.zeros(n, np.int64)
        exit_step = np.zeros(n, np.int64)
        confidence = np.zeros(n, np.float32)
        buckets = _buckets(batch_size)
        rows_processed = 0
        pool_ids, pool_states = [], []

        def finish(ids, probs, t):
            prediction[ids], confidence[ids], exit_step[ids] = probs.argmax(-1), probs.max(-1), t

        def padded(ids):   # (ids, their state rows 0..len-1) padded to a bucket size
            return _pad_rows(ids, np.arange(len(ids)), next(b for b in buckets if b >= len(ids)))

        def drain(final: bool):
            nonlocal rows_processed, pool_ids, pool_states
            while pool_ids and (final or sum(map(len, pool_ids)) >= batch_size):
                ids = np.concatenate(pool_ids)
                states = jax.tree.map(lambda *x: jnp.concatenate(x), *pool_states)
                now = ids[:batch_size]
                chunk, rows = padded(now)
                probs, extra = jax.device_get(rest(chunk, rows, states))
                rows_processed += len(chunk)
                finish(now, probs[:len(now)], 1)
                record(1, now, np.asarray(extra)[:len(now)])
                left = len(ids) - len(now)
                pool_ids = [ids[len(now):]] if left else []
                pool_states = [jax.tree.map(lambda x: x[len(now):], states)] if left else []

        for start in range(0, n, batch_size):
            ids = np.arange(start, min(start + batch_size, n))
            chunk, _ = padded(ids)
            states, probs = self._glance(self.variables, glance[chunk])
            rows_processed += len(chunk)
            probs = jax.device_get(probs)[:len(ids)]
            go = np.where(probs.max(-1) < thresholds[0])[0]
            finish(ids, probs, 0)
            if len(go):
                pool_ids.append(ids[go])
                pool_states.append(jax.tree.map(lambda x: x[jnp.asarray(go)], states))
            drain(final=False)
        drain(final=True)
        return {"prediction": prediction, "exit_step": exit_step, "confidence": confidence,
                "rows_processed": rows_processed}


def uni_tsm_step_gflops(model) -> np.ndarray:
    """GMACs per video of the two steps of `UniTSMOnlineRunner`, `[2]`, counted with
    `adafocus_jax.flops.count_macs` on the steps it runs: step 0 the TSM glance network on the
    G glance frames with both heads (exit 0); step 1 both policies, the crop and the TSM local
    network on the K chosen frames, and the fused prediction."""
    cfg = model.config
    s, g, k = cfg.input_size, int(cfg.num_glance_frames), int(cfg.num_focus_frames)
    variables = _abstract_variables(model)
    f32 = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)   # noqa: E731
    glance_fn = lambda v, x: model.apply(v, x, method="exit_glance")  # noqa: E731
    glance = jax.eval_shape(glance_fn, variables, f32(1, g, s, s, 3))
    policy = _traced_gflops(lambda v, m, p: model.apply(v, m, p, method="exit_policy"),
                            variables, glance["maps"], glance["pooled"])
    local = _traced_gflops(lambda v, *a: model.apply(v, *a, method="exit_tsm_local"),
                           variables, f32(1, k, s, s, 3), f32(1, 1, 4), glance["glance_logits"])
    return np.array([_traced_gflops(glance_fn, variables, f32(1, g, s, s, 3)), policy + local])


def make_runner(model, variables: Mapping):
    """The early-exit runner of `model`: `UniOnlineRunner` (Uni-AdaFocus, ActivityNet family),
    `UniTSMOnlineRunner` (its TSM variant), else `OnlineRunner` (the per-frame model; each
    checks the architecture)."""
    if model.config.get("version", "v1") == "uni":
        if not model.config.policy.get("per_frame", True):
            return UniTSMOnlineRunner(model, variables)
        return UniOnlineRunner(model, variables)
    return OnlineRunner(model, variables)


def _device_variables(variables: Mapping):
    return jax.device_put({"params": variables["params"],
                           "batch_stats": variables.get("batch_stats", {})})


def time_interleaved(fns: Mapping[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Wall-clock seconds of each function, A B A B ... `repeats` rounds (after one warm-up call
    of each, which compiles): {name: [seconds per round]}."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


# ------------------------------------------------------------------------------------------------
# The synthetic benchmark's early-exit section.


def load_split(config, split: str, max_videos: int = 0):
    """(uint8 frames `[N, T, S, S, 3]`, labels `[N]`) of a split, evaluation sampling; with
    separate focus frames (the TSM variant's candidates) the frames are a tuple (glance
    `[N, G, S, S, 3]`, focus `[N, N_c, S, S, 3]`)."""
    from adafocus_jax import data as data_lib
    source = data_lib.create_source(config.data, split)
    n = min(len(source), max_videos) if max_videos else len(source)
    examples = [source.get(i, None) for i in range(n)]
    glance = np.stack([e["glance"] for e in examples])
    if examples and "focus" in examples[0]:
        glance = (glance, np.stack([e["focus"] for e in examples]))
    return glance, np.asarray([int(e["label"]) for e in examples])


def full_step_probabilities(model, variables, frames: np.ndarray, batch_size: int) -> np.ndarray:
    """`[N, T, C]` softmax of every step's logits from the full (all-frames) model."""
    from adafocus_jax import inference
    fn = _jit(inference.predict_fn(model))
    out = []
    for chunk, n in padded_batches(frames, batch_size):
        chunk = chunk if isinstance(chunk, tuple) else (chunk,)
        out.append(np.asarray(jax.nn.softmax(fn(variables, *chunk)["step_logits"], -1))[:n])
    return np.concatenate(out)


def plot_curve(path: str, curve: Sequence[Mapping], real: Sequence[Mapping],
               full: Mapping, title: str) -> None:
    """A small PNG: accuracy (%) against GFLOPs/video of the fitted budgets (line), the real
    exiting runs (squares) and the full model (circle). Drawn with PIL (no plotting library)."""
    from PIL import Image, ImageDraw
    w, h, left, right, top, bottom = 640, 420, 70, 20, 40, 50
    xs = [c["gflops"] for c in curve] + [r["gflops"] for r in real] + [full["gflops"]]
    ys = [c["accuracy"] for c in curve] + [r["accuracy"] for r in real] + [full["accuracy"]]
    x0, x1 = 0.0, max(xs) * 1.05
    y0, y1 = max(0.0, min(ys) - 5), min(100.0, max(ys) + 5)

    def px(x, y):
        return (left + (x - x0) / (x1 - x0) * (w - left - right),
                h - bottom - (y - y0) / (y1 - y0) * (h - top - bottom))

    image = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(image)
    d.rectangle([left, top, w - right, h - bottom], outline="black")
    for i in range(6):
        xv, yv = x0 + (x1 - x0) * i / 5, y0 + (y1 - y0) * i / 5
        gx, _ = px(xv, y0)
        _, gy = px(x0, yv)
        d.line([gx, h - bottom, gx, h - bottom + 5], fill="black")
        d.text((gx - 18, h - bottom + 8), f"{xv:.4f}", fill="black")
        d.line([left - 5, gy, left, gy], fill="black")
        d.text((left - 45, gy - 6), f"{yv:.1f}", fill="black")
    d.text((w // 2 - 60, h - 18), "GFLOPs / video", fill="black")
    d.text((5, top - 25), "top-1 %", fill="black")
    d.text((left + 10, 8), title, fill="black")
    pts = [px(c["gflops"], c["accuracy"]) for c in sorted(curve, key=lambda c: c["gflops"])]
    d.line(pts, fill=(30, 90, 200), width=2)
    for x, y in pts:
        d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=(30, 90, 200))
    for r in real:
        x, y = px(r["gflops"], r["accuracy"])
        d.rectangle([x - 5, y - 5, x + 5, y + 5], outline=(200, 30, 30), width=2)
    x, y = px(full["gflops"], full["accuracy"])
    d.ellipse([x - 6, y - 6, x + 6, y + 6], outline="black", width=2)
    d.text((w - right - 250, top + 8), "blue: fitted budgets (test split)", fill=(30, 90, 200))
    d.text((w - right - 250, top + 22), "red squares: measured exiting runs", fill=(200, 30, 30))
    d.text((w - right - 250, top + 36), "black circle: full model", fill="black")
    image.save(path)


def _is_number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def benchmark(config, variables, model=None, *, fit_split: str = "val", test_split: str = "",
              num_budgets: int = 9, batch_size: int = 50, repeats: int = 3,
              timing_videos: int = 300, single_videos: int = 100,
              measure: Sequence[str | float] = ("cheapest", "mid"),
              plot_path: str = "") -> dict[str, Any]:
    """Fits thresholds on `fit_split`, traces accuracy vs GFLOPs on `test_split`, and measures
    the wall-clock of real exiting inference against the full model at the same batch size
    (on the first `timing_videos` test videos; batch size 1 on the first `single_videos`).

    `model` (default: from `config`) is the per-frame AdaFocus or Uni-AdaFocus (`make_runner`);
    `measure` names the measured points: "cheapest", "mid" or budgets in GFLOPs per video.

    Returns the `early_exit` section of the benchmark JSON:
      {"fit_split", "test_split", "num_videos", "step_gflops" `[T]` per step,
       "full": {accuracy, gflops},
       "curve": [{budget, p, thresholds, accuracy, gflops, exit_histogram}, ...],
       "measured": [{budget, accuracy, gflops, batch_size, compaction -> ms/video, ...}],
       "timing": {...how it was timed...}}
    """
    from adafocus_jax import models as models_lib
    named = ("cheapest", "mid")
    for name in measure:
        if name not in named and not _is_number(name):
            raise ValueError(f"measure: unknown point {name!r}; expected {list(named)} or a "
                             "budget in GFLOPs per video")
    model = model or models_lib.create_model(config)
    runner = make_runner(model, variables)     # checks the architecture
    test_split = test_split or str(config.benchmark.split)
    variables = runner.variables
    fit_frames, _ = load_split(config, fit_split)
    test_frames, test_labels = load_split(config, test_split)
    logging.info("early exit: %d %s + %d %s videos loaded", count_videos(fit_frames), fit_split,
                 count_videos(test_frames), test_split)
    positions = runner.exit_positions        # the full model's steps that are exits
    fit_conf = step_confidences(
        full_step_probabilities(model, variables, fit_frames, batch_size)[:, positions])
    test_probs = full_step_probabilities(model, variables, test_frames, batch_size)[:, positions]
    test_conf = step_confidences(test_probs)
    costs = runner.step_gflops()
    cumulative = np.cumsum(costs)
    steps = len(costs)
    full_acc = float(100 * np.mean(test_probs[:, -1].argmax(-1) == test_labels))
    rows = np.arange(len(test_labels))

    def evaluate_fit(fit):
        exits = simulate_exit(test_conf, fit.thresholds)
        pred = test_probs[rows, exits].argmax(-1)
        return exits, float(100 * np.mean(pred == test_labels)), float(cumulative[exits].mean())

    def curve_point(budget):
        fit = fit_thresholds(fit_conf, costs, float(budget))
        exits, acc, gflops = evaluate_fit(fit)
        return {"budget": float(budget), "p": fit.p,
                "thresholds": [float(t) for t in fit.thresholds],
                "accuracy": acc, "gflops": gflops,
                "exit_histogram": np.bincount(exits, minlength=steps).tolist()}

    curve = [curve_point(b) for b in np.linspace(cumulative[0], cumulative[-1], num_budgets)]
    # Measured operating points (`measure`): "cheapest" = the cheapest budget within 1 point of
    # the full model, "mid" = the midpoint of the budget range, a number = that budget (GFLOPs).
    within = [c for c in curve if c["accuracy"] >= full_acc - 1.0]
    points = {"cheapest": min(within, key=lambda c: c["gflops"]) if within else curve[-1],
              "mid": curve[len(curve) // 2]}
    chosen = []
    for name in measure:
        point = points[name] if name in points else curve_point(float(name))
        if point not in chosen:
            chosen.append(point)
    logging.info("early exit: curve of %d budgets done; full model top-1 %.2f%%", len(curve),
                 full_acc)
    measured = []
    for point in chosen:
        thresholds = point["thresholds"]
        # The real exits (on the timed videos) must be the simulated ones.
        timed = first_videos(test_frames, timing_videos) if timing_videos else test_frames
        want = simulate_exit(test_conf, thresholds)[:count_videos(timed)]
        results = {c: runner.run(timed, thresholds, batch_size, c) for c in ("compact", "masked")}
        for compaction, got in results.items():
            if not np.array_equal(got["exit_step"], want):
                raise AssertionError(f"real exits ({compaction}) differ from the simulation")
            simulated = test_probs[rows[:count_videos(timed)], want].argmax(-1)
            if not np.array_equal(got["prediction"], simulated):
                raise AssertionError(f"real predictions ({compaction}) differ from the full "
                                     "model's at the same step")
        fns = {
            "full": lambda: runner.full(timed, batch_size),
            "stepwise_no_exit": lambda: runner.run(timed, thresholds, batch_size, "none"),
            "exit_compact": lambda: runner.run(timed, thresholds, batch_size, "compact"),
            "exit_masked": lambda: runner.run(timed, thresholds, batch_size, "masked"),
        }
        logging.info("early exit: budget %.4f: exits checked; timing", point["budget"])
        times = time_interleaved(fns, repeats)
        single = first_videos(test_frames, single_videos)
        times_1 = time_interleaved({
            "full": lambda: runner.full(single, 1),
            "exit": lambda: runner.run(single, thresholds, 1, "compact")}, repeats)
        n = n_timed = count_videos(timed)
        ms = {k: 1000 * float(np.median(v)) / n for k, v in times.items()}
        ms_1 = {k: 1000 * float(np.median(v)) / count_videos(single) for k, v in times_1.items()}
        exits = simulate_exit(test_conf, thresholds)   # = the real exits (checked above)
        measured.append({
            "budget": point["budget"], "thresholds": thresholds,
            "accuracy": float(100 * np.mean(test_probs[rows, exits].argmax(-1) == test_labels)),
            "gflops": float(cumulative[exits].mean()),
            "mean_frames": float(runner.local_frames(exits).mean()),
            "timed_accuracy": float(100 * np.mean(
                results["compact"]["prediction"] == test_labels[:n_timed])),
            "timed_gflops": float(cumulative[results["compact"]["exit_step"]].mean()),
            "rows_processed_timed": {
                "full": int(math.ceil(n_timed / batch_size) * batch_size * steps),
                "compact": int(results["compact"]["rows_processed"]),
                "masked": int(results["masked"]["rows_processed"])},
            "batch_size": batch_size, "timed_videos": int(n), "ms_per_video": ms,
            "speedup_vs_full": {k: ms["full"] / v for k, v in ms.items() if k != "full"},
            "batch_size_1": {"num_videos": count_videos(single), "ms_per_video": ms_1,
                             "speedup_vs_full": ms_1["full"] / ms_1["exit"]},
        })
    section = {
        "fit_split": fit_split, "test_split": test_split, "num_videos": int(len(test_labels)),
        "num_fit_videos": int(count_videos(fit_frames)), "step_gflops": [float(c) for c in costs],
        "num_steps": steps,
        "full": {"accuracy": full_acc, "gflops": float(cumulative[-1])},
        "curve": curve, "measured": measured,
        "timing": {"repeats": repeats, "statistic": "median of interleaved rounds",
                   "what": "inference only, frames already in memory as uint8; full = the "
                           "all-frames model (one call per batch); exit = step by step (per "
                           "frame; Uni: glance stage, then one local frame per step) with one "
                           "host read of the confidences per step",
                   "device": str(jax.devices()[0].platform)},
    }
    if plot_path:
        plot_curve(plot_path, curve, measured, section["full"],
                   f"{runner.title}, {test_split} split ({len(test_labels)} videos)")
        section["plot"] = plot_path
    return section
