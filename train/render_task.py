"""Stage-2 training task: the renderers (head512, upper512x768) and the face refine network.

One `RenderTask` drives `chatanyone_jax.render.train_step.make_step_fn` (generator F / M / W / G and the
multi-scale discriminator, one GAN step) from the generic trainer. The config (`configs.common.
render_config`) names model.preset (a `render.presets` preset: image sizes and keypoint layout decide the
batch), crop ("body" / "head"), region (None / "hand" / "face" term), face_refine (G's injection image is
the driving head crop with its face masked out, Fig. 4), loss_weights, optional vgg_weights (perceptual
terms) and init_from (a converted LivePortrait checkpoint, `python -m train.convert liveportrait`, or an
export / workdir of this project's renderers: arrays with matching names and shapes are copied, the rest
keeps its random init).

Initialisation: `render.train_step.init_train_state` with M's stem bias drawn at STEM_BIAS_STD (flat crop
padding otherwise blows up M's gradient) and, for the "head_offset" layout, M's offset head at zero. Train
state: that state without "rng", plus "norm" ({}); the step's key is fold_in(config seed key, step), so a
resumed run repeats the randomness of an uninterrupted one.
"""

from __future__ import annotations

import logging
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from PIL import Image

from chatanyone_jax import tree_math
from chatanyone_jax.convert.state_dict import load_state_dict
from chatanyone_jax.ops.resample import icnr_project
from chatanyone_jax.render import presets, train_step
from chatanyone_jax.vgg19 import VGG19Features, convert_vgg19
from data import pipelines, records
from train import checkpoint, optim
from train.convert import load_liveportrait_checkpoint
from train.render_eval import RenderEvaluator
from train.task_base import Task

log = logging.getLogger(__name__)

STEM_BIAS_STD = 0.1
# Converted LivePortrait checkpoint names -> generator parts of the train state.
LIVEPORTRAIT_PARTS = {"appearance_feature_extractor": "F", "motion_extractor": "M", "warping_network": "W",
                      "spade_generator": "G"}


def _resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """(B, H, W, 1) float mask -> (B, h, w, 1), area-averaged (PIL box filter)."""
  if mask.shape[1:3] == tuple(size):
    return mask
  out = [np.asarray(Image.fromarray(m[..., 0]).resize((size[1], size[0]), Image.Resampling.BOX), np.float32)
         for m in mask]
  return np.stack(out)[..., None]


def load_vgg19(path: str):
  """A feature function image -> [relu1_1 ... relu5_1] from a torchvision VGG-19 weights file."""

  variables = jax.tree.map(jnp.asarray, convert_vgg19(load_state_dict(path)))
  model = VGG19Features()
  return lambda image: model.apply(variables, image)


def merge_matching(target, source) -> tuple[object, int, int]:
  """Copies every leaf of `source` whose path exists in `target` with the same shape.

  Returns (merged tree, number copied, number of target leaves left as they were).
  """
  flat_src = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(source)}
  copied = kept = 0

  def pick(path, leaf):
    nonlocal copied, kept
    v = flat_src.get(jax.tree_util.keystr(path))
    if v is not None and tuple(np.shape(v)) == tuple(leaf.shape):
      copied += 1
      return jnp.asarray(v, leaf.dtype)
    kept += 1
    return leaf

  merged = jax.tree_util.tree_map_with_path(pick, target)
  return merged, copied, kept


class RenderTask(Task):
  """A renderer (or face refine) trained on `data.pipelines.render_pairs` (module docstring)."""

  name = "render"

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    self.renderer = presets.get(config.model.preset)
    self.layout = presets.keypoint_layout(self.renderer)
    if config.crop not in ("body", "head"):
      raise ValueError(f"config.crop must be 'body' or 'head', got {config.crop!r}")
    if self.layout == "hybrid_body" and config.crop != "body":
      raise ValueError(f"preset {config.model.preset} drives body keypoints: it needs crop='body'")
    if config.face_refine and not self.renderer.spade_generator.hand_injection:
      raise ValueError(f"face refine needs a preset with G's injection branch; {config.model.preset} "
                       "has none")
    if config.get("warm_start_icnr") and not config.get("warm_start"):
      raise ValueError("config.warm_start_icnr projects the weights of config.warm_start: give "
                       "--config.warm_start=EXPORT_OR_WORKDIR too (new trainings start ICNR-initialised)")
    self.injection = self.renderer.spade_generator.hand_injection
    self.perceptual_fn = load_vgg19(config.vgg_weights) if config.get("vgg_weights") else None

  # ---------------------------------------------------------------------------------------------- data

  def loader(self, batch_size: int, seed: int, shard_options=None):
    c = self.config
    meta = records.read_meta(c.data_dir)
    if c.crop == "body" and not meta.get("body_size"):
      raise ValueError(f"records at {c.data_dir} have no body crops (meta.json body_size)")
    cfg = pipelines.RenderPairConfig(crop=c.crop, input_size=self.renderer.image_size,
                                     output_size=self.renderer.output_size, max_gap=c.max_gap)
    return pipelines.render_pairs(c.data_dir, batch_size=batch_size, split=c.split, seed=seed, config=cfg,
                                  worker_count=c.worker_count, shard_options=shard_options)

  def frames_per_example(self) -> int:
    return 1

  def adapt(self, batch: dict) -> dict:
    f = lambda k: np.asarray(batch[k], np.float32)
    out = {k: f(k) for k in ("source", "driving", "driving_target")}
    if self.renderer.num_kp_head:
      out.update(kp_head_source=f("kp_head_source"), kp_head_driving=f("kp_head_driving"))
    if self.layout == "hybrid_body":
      out.update({k: f(k) for k in ("body_kp_source", "body_kp_driving", "body_visibility_source",
                                    "body_visibility_driving")})
    if self.config.face_refine:
      face = _resize_mask(f("face_mask"), self.renderer.image_size)
      out["hand_image"] = out["driving"] * (1.0 - face)  # `face_refine.mask_face`
    elif self.injection:
      out["hand_image"] = f("hand_image")
    if self.config.region:
      key = train_step.REGIONS[self.config.region]
      out[key] = f(key)
    return out

  def batch_spec(self, batch_size: int) -> dict:
    r = self.renderer
    f = lambda *s: jax.ShapeDtypeStruct((batch_size, *s), jnp.float32)
    spec = {"source": f(*r.image_size, 3), "driving": f(*r.image_size, 3),
            "driving_target": f(*r.output_size, 3)}
    if r.num_kp_head:
      spec.update(kp_head_source=f(presets.K_HEAD, 3), kp_head_driving=f(presets.K_HEAD, 3))
    if self.layout == "hybrid_body":
      spec.update(body_kp_source=f(presets.K_BODY, 3), body_kp_driving=f(presets.K_BODY, 3),
                  body_visibility_source=f(presets.K_BODY), body_visibility_driving=f(presets.K_BODY))
    if self.config.face_refine or self.injection:
      spec["hand_image"] = f(*r.image_size, 3)
    if self.config.region:
      spec[train_step.REGIONS[self.config.region]] = f(*r.output_size, 1)
    return spec

  def norm_spec(self) -> dict:
    return {}

  def norm_stats(self, batches: list[dict]) -> dict:
    return {}

  # ------------------------------------------------------------------------------------ state and step

  def optimizers(self, tx: optax.GradientTransformation, schedule: optax.Schedule):
    """(generator tx, discriminator tx): the trainer's optimizer, and the same with disc_lr_factor."""
    c = self.config
    disc_schedule = lambda step: c.disc_lr_factor * schedule(step)
    return tx, optim.optimizer(c, disc_schedule)

  def make_init(self, tx: optax.GradientTransformation, spec: dict, schedule: optax.Schedule):
    gen_tx, disc_tx = self.optimizers(tx, schedule)
    shape = spec["source"].shape

    def init(rng: jax.Array, norm: dict) -> dict:
      state = train_step.init_train_state(self.renderer, rng, shape, gen_tx, disc_tx, ema=True,
                                          stem_bias_std=STEM_BIAS_STD, zero_head_offsets=True)
      state.pop("rng")
      return {**state, "norm": norm}

    return init

  def initial_params(self, state: dict, mesh_shardings, load_weights=None) -> dict:
    """Applies `config.init_from` to a freshly initialised state: a converted LivePortrait checkpoint, or
    another renderer of this project (a `train.export` folder or a training workdir, read by
    `load_weights`, `train.export.load_weights`, which the trainer passes: its EMA generator, e.g. the
    trained head renderer warm-starting the face refine, whose F / M / W and most of G match)."""
    path = self.config.get("init_from")
    if not path:
      return state
    if (pathlib.Path(path) / checkpoint.CONFIG_FILE).is_file():  # an export or a workdir of this project
      if load_weights is None:
        raise ValueError(f"init_from={path} is an export or a workdir: pass load_weights "
                         "(train.export.load_weights)")
      weights = load_weights(path)
      tree = {name: {"params": weights["params"].get(part, {}),
                     "batch_stats": weights.get("batch_stats", {}).get(part, {})}
              for name, part in LIVEPORTRAIT_PARTS.items()}
    else:
      tree = load_liveportrait_checkpoint(path)
      unknown = set(tree) - set(LIVEPORTRAIT_PARTS) - {"stitching_retargeting", "stitching", "lip", "eye"}
      if unknown:
        raise ValueError(f"{path}: unexpected networks {sorted(unknown)} in the converted checkpoint")
    gen = jax.device_get(state["gen"])
    total_copied = total_kept = 0
    for name, part in LIVEPORTRAIT_PARTS.items():
      if name not in tree:
        log.warning("init_from %s: no %s in the checkpoint; %s stays randomly initialised", path, name, part)
        continue
      for coll in ("params", "batch_stats"):
        if tree[name].get(coll) and gen[coll][part]:
          gen[coll][part], copied, kept = merge_matching(gen[coll][part], tree[name][coll])
          total_copied, total_kept = total_copied + copied, total_kept + kept
          log.info("init_from: %s %s: %d arrays copied, %d kept (name or shape differs)", part, coll, copied,
                   kept)
    if total_copied == 0:
      raise ValueError(f"init_from={path}: no array matches preset {self.config.model.preset} "
                       "(was it converted for another renderer?)")
    state = {**state, "gen": {**state["gen"], "params": gen["params"], "batch_stats": gen["batch_stats"]},
             "ema": jax.tree.map(np.array, gen["params"])}  # its own buffers: the step donates both
    return jax.device_put(state, mesh_shardings)

  def with_weights(self, state: dict, weights: dict) -> dict:
    """The generator's parameters, EMA and BatchNorm statistics from `weights`; D and the optimisers
    stay fresh."""
    cast = lambda new, old: np.asarray(new, old.dtype)
    params = jax.tree.map(cast, weights["params"], state["gen"]["params"])
    if self.config.get("warm_start_icnr"):
      params = self._icnr_heads(params)
    stats = jax.tree.map(cast, weights["batch_stats"], state["gen"]["batch_stats"])
    gen = {**state["gen"], "params": params, "batch_stats": stats}
    return {**state, "gen": gen, "ema": jax.tree.map(np.copy, params)}

  def _icnr_heads(self, params: dict) -> dict:
    """`params` with G's sub-pixel heads projected onto ICNR (`config.warm_start_icnr`)."""
    g = self.renderer.spade_generator
    if g.upscale is None or g.upscale <= 1:
      raise ValueError(f"config.warm_start_icnr: preset {self.config.model.preset}'s G has no pixel shuffle "
                       "(upscale 1); leave warm_start_icnr off")
    gen = dict(params["G"])
    for name in ("conv_img", "conv_alpha"):
      if name in gen:
        kernel, bias = icnr_project(gen[name]["kernel"], gen[name].get("bias"), 2)  # G's PixelShuffle(2)
        dtype = gen[name]["kernel"].dtype
        gen[name] = {**gen[name], "kernel": kernel.astype(dtype)}
        if bias is not None:
          gen[name]["bias"] = bias.astype(gen[name]["bias"].dtype)
        log.info("warm_start_icnr: G/%s projected onto ICNR (its 4 sub-pixel kernels averaged)", name)
    return {**params, "G": gen}

  def make_step(self, tx: optax.GradientTransformation, schedule: optax.Schedule, ema_decay: float,
                key: jax.Array):
    gen_tx, disc_tx = self.optimizers(tx, schedule)
    inner = train_step.make_step_fn(self.renderer, gen_tx, disc_tx, self.config.loss_weights.to_dict(),
                                    ema_decay=ema_decay, perceptual_fn=self.perceptual_fn,
                                    region=self.config.region)

    def step(state: dict, batch: dict) -> tuple[dict, dict]:
      new, m = inner({**state, "rng": key}, batch)
      new.pop("rng")
      return new, {**m, "loss": m["gen_total"], "grad_norm": m["gen_grad_norm"],
                   "learning_rate": schedule(state["step"])}

    return step

  def state_metrics(self, state: dict) -> dict:
    """param_norm of the generator the non-finite guard kept."""
    return {"param_norm": tree_math.global_norm(state["gen"]["params"])}

  # ---------------------------------------------------------------------------------------- summaries

  def make_evaluator(self):
    """`train.render_eval.RenderEvaluator` when config.evals.every > 0."""
    evals = self.config.get("evals")
    return RenderEvaluator(self, self.config) if evals is not None and evals.every > 0 else None

  def make_summary(self, num_images: int = 4):
    """images(state, batch) -> (n, Ho, 3 Wo, 3): source | driving target | generated (EMA, inference)."""
    r = self.renderer

    def images(state: dict, batch: dict) -> jax.Array:
      n = min(num_images, batch["source"].shape[0])
      b = jax.tree.map(lambda x: x[:n], batch)
      head = (b["kp_head_source"], b["kp_head_driving"]) if r.num_kp_head else None
      pred = train_step.reconstruct(r, state["ema"], state["gen"]["batch_stats"], b["source"], b["driving"],
                                    b.get("hand_image"), head)
      source = jax.image.resize(b["source"], (n, *r.output_size, 3), "bilinear")
      return jnp.concatenate([source, b["driving_target"], jnp.clip(pred, 0, 1)], axis=2)

    return images

  def summaries(self, images: np.ndarray) -> dict[str, np.ndarray]:
    """The host image grid for TensorBoard: rows of source | target | generated."""
    return {"reconstruction/source_target_generated": np.concatenate(list(images), axis=0)}
