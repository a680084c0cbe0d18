"""`Task`: what the generic trainer (`train.trainer`) needs to know about one model.

A task is built from the run's config and gives the trainer
  * `loader(batch_size, seed, shard_options)`: the grain DataLoader of config.data_dir's records (numpy
    batches of `batch_size` rows: the per-process share of the global batch);
  * `adapt(batch)`: host-side numpy, the pipeline batch -> the model batch (fixed shapes: one compile);
  * `batch_spec(batch_size)`: ShapeDtypeStructs of `adapt`'s output for a global batch (shapes-first init);
  * `norm_stats(batches)` / `norm_spec()`: normalisation statistics estimated from adapted batches, kept
    in the train state as state["norm"] (checkpointed with the weights, used by inference);
  * `init_params(rng, spec)` and `loss(params, batch, rng, norm)`: pure and jittable;
  * `make_init` / `make_step` (+ `state_metrics`): the pure state initialiser and train step, by default
    built from those (the renderer's GAN overrides them: `train.render_task`);
  * `initial_params(state, shardings, load_weights)`: a hook to load pretrained weights into a fresh state;
    `with_weights(state, weights)`: a fresh state with exported weights (`trainer.warm_start`);
  * `make_summary()` / `summaries(arrays)`: optional TensorBoard images;
  * `resolve_model(model)`: config.model with every architecture choice spelt out (resuming checks it).
"""

from __future__ import annotations

import jax
import ml_collections
import numpy as np
import optax

from chatanyone_jax.motion.train_step import init_train_state, update_step


class Task:
  """Base class; see the module docstring. The default state is {"params", "opt_state", "ema", "step",
  "norm"} (`chatanyone_jax.motion.train_step.init_train_state` plus the normalisation statistics)."""

  name = ""

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config

  @classmethod
  def resolve_model(cls, model: dict) -> dict:
    """config.model (a plain dict) with what it leaves to defaults spelt out; two configs whose resolved
    models are equal build the same networks."""
    return model

  def frames_per_example(self) -> int:
    """Video frames one example of the batch trains on (for frames/s)."""
    return 1

  def make_init(self, tx: optax.GradientTransformation, spec: dict, schedule: optax.Schedule):
    """init(rng, norm) -> the train state, pure (the trainer jits it with shardings)."""

    def init(rng: jax.Array, norm: dict) -> dict:
      return {**init_train_state(self.init_params(rng, spec), tx), "norm": norm}

    return init

  def make_step(self, tx: optax.GradientTransformation, schedule: optax.Schedule, ema_decay: float,
                key: jax.Array):
    """step(state, batch) -> (state, metrics), pure: `update_step` of the task loss (reading state["norm"]).

    metrics: "loss", "grad_norm", "param_norm" and "learning_rate" (of this step), () float32 each.
    """

    def step(state: dict, batch: dict) -> tuple[dict, dict]:
      loss_fn = lambda params, b, rng: self.loss(params, b, rng, state["norm"])
      new, out = update_step(state, batch, loss_fn, tx, ema_decay, key)
      return new, {**out, "learning_rate": schedule(state["step"])}

    return step

  def state_metrics(self, state: dict) -> dict:
    """Metrics of the state a step kept (after the trainer's non-finite guard), e.g. a param_norm that the
    step does not report itself; pure."""
    return {}

  def initial_params(self, state: dict, shardings, load_weights=None) -> dict:
    return state

  def with_weights(self, state: dict, weights: dict) -> dict:
    """`state` (host arrays) with inference weights ({"params", "norm"[, "batch_stats"]}, as
    `train.export.load_weights` returns them) as its parameters and EMA (`trainer.warm_start`)."""
    params = jax.tree.map(lambda new, old: np.asarray(new, old.dtype), weights["params"], state["params"])
    norm = {k: np.asarray(weights["norm"][k], np.asarray(v).dtype) for k, v in state["norm"].items()}
    return {**state, "params": params, "ema": jax.tree.map(np.copy, params), "norm": norm}

  def make_evaluator(self):
    """None, or an object with run(state) -> (scalars, images) that the trainer calls every
    config.evals.every steps and at the end (held-out evaluation; `train.render_eval`)."""
    return None

  def make_summary(self):
    """None, or a jittable fn(state, batch) -> pytree of arrays for `summaries` (every image_every steps)."""
    return None

  def summaries(self, arrays) -> dict[str, np.ndarray]:
    """{tag: (H, W, 3) float image in [0, 1]} from `make_summary`'s output (host numpy)."""
    return {}
