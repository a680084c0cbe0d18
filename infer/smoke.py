"""Random tiny models for smoke runs: `python -m infer.main --random-weights`, tests and benchmarks.

`random_params` builds randomly initialised tiny (params, configs), keyed as the checkpoint workdirs
(`infer.models`), that `infer.stream` takes instead of a checkpoint. The frames of such a stream are
meaningless; the run exercises the whole pipeline (annotation, both samplers, the renderers) without a
trained model. It lives in `infer/` rather than in the tests because the CLI's --random-weights smoke
test of an installation uses it.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

import jax
import numpy as np

from chatanyone_jax.render import presets
from chatanyone_jax.render.train_step import create_generator
from chatanyone_jax.stream_spec import MODES
from train import tasks
from train.configs import motion_body, motion_face


def _perturb_zeros(tree, scale: float, seed: int):
  """Every all-zero leaf (AdaLN-Zero gates, final layers, injection gates, biases) -> N(0, scale²) noise,
  so that an untrained network's output depends on all its inputs."""
  rs = np.random.RandomState(seed)
  f = lambda p: rs.normal(0.0, scale, np.shape(p)).astype(np.float32) if not np.any(np.asarray(p)) else p
  return jax.tree.map(lambda p: np.asarray(f(np.asarray(p))), tree)


def random_params(mode: str = "upper", *, refine: bool = True, seed: int = 0) -> tuple[dict, dict]:
  """Randomly initialised tiny (params, configs) for tests and smoke runs (the output is meaningless).

  Motion: `train/configs/motion_face.py:tiny` / `motion_body.py:tiny` through `train.tasks`
  (`init_params`), with the zero-initialised layers perturbed and normalisation statistics of plausible
  magnitude (small head motion around the usual head position in the body crop). Renderers: presets
  tiny_upper512x768 / tiny_head512 / tiny_face_refine via `render.train_step.create_generator`.
  configs["clip_x0"] = 3 bounds the samplers' x̂0 (untrained ε is uncalibrated). Cached per arguments
  (fresh containers each call, shared read-only arrays).
  """
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
  params, configs = _random_params(mode, refine, seed)
  return jax.tree.map(lambda x: x, params), copy.deepcopy(configs)


@functools.lru_cache(maxsize=4)
def _random_params(mode: str, refine: bool, seed: int) -> tuple[dict, dict]:
  key = jax.random.key(seed)
  k_face, k_body, k_render, k_refine = jax.random.split(key, 4)
  configs: dict[str, Any] = {"motion_face": motion_face.get_config("tiny")}
  params: dict[str, Any] = {}
  face = tasks.get_task(configs["motion_face"])
  spec = face.batch_spec(1)
  p = jax.jit(lambda k: face.init_params(k, spec))(k_face)
  # 52 exp (unit-variance template coefficients), pitch / yaw / roll in degrees, translation in body units.
  std = np.concatenate([np.full(52, 0.5), [4.0, 4.0, 2.0], [0.02, 0.02, 0.02]]).astype(np.float32)
  mean = np.zeros(58, np.float32)
  mean[52 + 4] = -0.62  # head centre above the body crop centre (PreprocessConfig body_face_y)
  params["motion_face"] = {"params": _perturb_zeros(p, 0.2, seed), "norm": {"motion_mean": mean,
                                                                            "motion_std": std}}
  if mode == "upper":
    configs["motion_body"] = motion_body.get_config("tiny")
    body = tasks.get_task(configs["motion_body"])
    spec = body.batch_spec(1)
    p = jax.jit(lambda k: body.init_params(k, spec))(k_body)
    layout = body.body_config.layout
    sizes = layout.sizes
    mean, std = {}, {}
    for name, size in sizes.items():
      mean[name], std[name] = np.zeros(size, np.float32), np.full(size, 0.01, np.float32)
    mean["scale"][:], std["scale"][:] = 0.3, 0.005
    mean["translation"][:] = [0.0, -0.62, 0.0]
    std["translation"][:] = 0.01
    hands = np.zeros((2, 65), np.float32)
    hands[:, 0] = 0.3  # presence: a hand shows where the sample is > 0.5
    hands[:, 1:4] = [[0.4, 0.6, 0.0], [-0.4, 0.6, 0.0]]  # wrists low in the crop
    hands[:, 4] = 0.25  # palm: an eighth of the crop width
    hand_std = np.full((2, 65), 0.1, np.float32)
    hand_std[:, 0] = 0.3
    mean["hands"], std["hands"] = hands.ravel(), hand_std.ravel()
    params["motion_body"] = {"params": _perturb_zeros(p, 0.2, seed + 1),
                             "norm": {"target_mean": np.concatenate([mean[n] for n in sizes]),
                                      "target_std": np.concatenate([std[n] for n in sizes])}}
  configs["clip_x0"] = 3.0  # untrained ε is uncalibrated: bound x̂0 (in std units) while sampling
  names = {"render": "tiny_upper512x768" if mode == "upper" else "tiny_head512"}
  if refine and mode == "upper":
    names["face_refine"] = "tiny_face_refine"
  for (name, preset), k in zip(names.items(), (k_render, k_refine), strict=False):
    cfg = presets.get(preset)
    gen = jax.device_get(create_generator(cfg, k, (1, *cfg.image_size, 3)))
    params[name] = {**gen, "params": _perturb_zeros(gen["params"], 0.02, seed + 2)}
    configs[name] = cfg
  return params, configs
