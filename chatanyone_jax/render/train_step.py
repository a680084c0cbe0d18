"""One jitted GAN training step of the renderer (F, M, W, G + multi-scale discriminator).

LivePortrait's self-reenactment recipe (paper §3.4, Eq. 6): source and driving frames of one clip; M gives
the keypoints of both, F turns the source into a 3D appearance volume, W warps it from the source
keypoints to the driving ones (W's control keypoints per `presets.keypoint_layout`: "implicit",
"hybrid_body" Eq. 3-4, "head_offset" Eq. 2) and G decodes the driving frame; the discriminator gets its
own hinge loss and optax update in the same step (losses and batch: `make_step_fn`).

The train state is an explicit pytree (STYLE.md), built by `init_train_state`:

  {"gen": {"params", "batch_stats", "opt_state"},   # params / batch_stats: {"F", "M", "W", "G"}
   "disc": {"params", "batch_stats", "opt_state"},  # batch_stats: spectral-norm vectors (may be empty)
   "ema": generator params EMA or None, "step": int32 scalar, "rng": key}

`make_step_fn` returns the pure step (for a caller that jits it with shardings, e.g. `train.trainer`);
`make_train_step` jits it with the state donated. Randomness is `fold_in(state["rng"], state["step"])`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from chatanyone_jax import ema as ema_lib
from chatanyone_jax import losses, tree_math, xla_options
from chatanyone_jax.ops.init_rng import init_key
from chatanyone_jax.ops.resample import resize_bilinear
from chatanyone_jax.render.appearance_feature_extractor import AppearanceFeatureExtractor
from chatanyone_jax.render.discriminator import MultiScaleDiscriminator
from chatanyone_jax.render.keypoints import control_keypoints
from chatanyone_jax.render.motion_extractor import MotionExtractor
from chatanyone_jax.render.presets import RendererConfig, keypoint_layout
from chatanyone_jax.render.spade_generator import SPADEDecoder, skip_inputs
from chatanyone_jax.render.warping_network import WarpingNetwork

RendererTrainState = dict[str, Any]
Batch = Mapping[str, jax.Array]
Metrics = dict[str, jax.Array]

# Generator loss weights (FOMM / face-vid2vid / LivePortrait orders of magnitude). "perceptual" only
# counts when a VGG feature function is given to `make_train_step`.
DEFAULT_LOSS_WEIGHTS: dict[str, float] = {
    "l1": 1.0, "gan": 1.0, "feature_matching": 10.0, "equivariance": 10.0, "keypoint_prior": 10.0,
    "deformation_prior": 5.0, "perceptual": 1.0, "landmark": 1.0, "region": 1.0,
}
REGIONS = {"hand": "hand_mask", "face": "face_mask", "mouth": "mouth_mask"}

GEN_PARTS = ("F", "M", "W", "G")
INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def networks(config: RendererConfig) -> dict[str, nn.Module]:
  """F, M, W, G and D of a renderer config, unbound (the modules every step and init apply)."""
  return {
      "F": AppearanceFeatureExtractor(config.appearance_feature_extractor),
      "M": MotionExtractor(config.motion_extractor),
      "W": WarpingNetwork(config.warping_network),
      "G": SPADEDecoder(config.spade_generator),
      "D": MultiScaleDiscriminator(config.discriminator),
  }


def _split(variables: Mapping[str, Any]) -> tuple[Any, Any]:
  """(params, batch_stats) of one network's variables (batch_stats {} when it has none)."""
  return variables["params"], variables.get("batch_stats", {})


def init_generator(config: RendererConfig, key: jax.Array, image_shape: Sequence[int]) -> dict[str, dict]:
  """{"params": {F, M, W, G: ...}, "batch_stats": {...}} from dummy inputs, as `init_train_state` makes
  them from the same key (the discriminator and the optimiser states are not built). Pure. The networks
  draw their parameters from `init_key(key)` (`chatanyone_jax.ops.init_rng`: compiles about twice as fast
  as threefry on CPU)."""
  h, w = tuple(image_shape)[-3:-1] if len(image_shape) >= 3 else tuple(image_shape)
  nets = networks(config)
  k_f, k_m, k_w, k_g = jax.random.split(init_key(key), 6)[:4]
  image = jnp.zeros((1, h, w, 3), jnp.float32)
  v_f = nets["F"].init(k_f, image)
  v_m = nets["M"].init(k_m, image)
  volume = jax.eval_shape(lambda: nets["F"].apply(v_f, image))
  kp = jnp.zeros((1, config.warping_network.num_kp, 3), jnp.float32)
  v_w = nets["W"].init(k_w, jnp.zeros(volume.shape, volume.dtype), kp, kp)
  warped = jax.eval_shape(lambda: nets["W"].apply(v_w, jnp.zeros(volume.shape, volume.dtype), kp, kp))
  feat, flow = (jnp.zeros(warped[k].shape, warped[k].dtype) for k in ("out", "flow"))
  hand = jnp.zeros((1, h, w, 3), jnp.float32) if config.spade_generator.hand_injection else None
  v_g = nets["G"].init(k_g, feat, hand, **skip_inputs(config.spade_generator, image, {"flow": flow}))
  gen = {name: _split(v) for name, v in zip(GEN_PARTS, (v_f, v_m, v_w, v_g), strict=True)}
  return {"params": {n: p for n, (p, _) in gen.items()}, "batch_stats": {n: s for n, (_, s) in gen.items()}}


def init_train_state(config: RendererConfig, key: jax.Array, image_shape: Sequence[int],
                     gen_tx: optax.GradientTransformation, disc_tx: optax.GradientTransformation, *,
                     ema: bool = False, stem_bias_std: float = 0.0,
                     zero_head_offsets: bool = False) -> RendererTrainState:
  """The renderer's train state: every network from dummy inputs, then both optimiser states. Pure
  (traceable: the trainer jits it with shardings; `create_train_state` compiles it once).

  image_shape: (B, H, W, 3) or (H, W) of the source / driving images (only H, W are used; they should
  equal `config.image_size`). ema: the state carries an EMA copy of the generator params.
  stem_bias_std: M's stem-conv bias starts at N(0, stem_bias_std²) instead of 0. Why: with zero biases the
  stem's LayerNorm sees zero variance across channels wherever the crop is flat (the black out-of-frame
  padding of body crops) and amplifies the gradient there by 1 / sqrt(eps).
  zero_head_offsets: with the "head_offset" layout, M's offset head (fc_exp) starts at zero, so ΔX_head = 0
  and training starts from the explicit template keypoints (no effect with the other layouts).
  """
  gen = init_generator(config, key, image_shape)
  k_d, k_rng = jax.random.split(key, 6)[4:]
  v_d = networks(config)["D"].init(init_key(k_d), jnp.zeros((1, *config.output_size, 3), jnp.float32))
  gen_params, gen_stats = gen["params"], gen["batch_stats"]
  d_params, d_stats = _split(v_d)
  state = {
      "gen": {"params": gen_params, "batch_stats": gen_stats, "opt_state": gen_tx.init(gen_params)},
      "disc": {"params": d_params, "batch_stats": d_stats, "opt_state": disc_tx.init(d_params)},
      "ema": jax.tree.map(jnp.copy, gen_params) if ema else None,
      "step": jnp.zeros((), jnp.int32),
      "rng": k_rng,
  }
  # The optimiser states above do not depend on the values replaced below (Adam's moments start at 0).
  trees = [state["gen"]["params"]] + ([state["ema"]] if ema else [])
  if stem_bias_std:
    shape = gen_params["M"]["stem_conv"]["bias"].shape
    bias = stem_bias_std * jax.random.normal(jax.random.fold_in(key, 1), shape)
    for tree in trees:
      tree["M"]["stem_conv"]["bias"] = bias
  if zero_head_offsets and keypoint_layout(config) == "head_offset":
    for tree in trees:
      tree["M"]["fc_exp"] = jax.tree.map(jnp.zeros_like, tree["M"]["fc_exp"])
  return state


def create_train_state(config: RendererConfig, key: jax.Array, image_shape: Sequence[int],
                       gen_tx: optax.GradientTransformation, disc_tx: optax.GradientTransformation,
                       **kwargs) -> RendererTrainState:
  """`init_train_state` (same arguments) compiled and run once (`_compile_and_run`)."""
  return _compile_and_run(lambda: init_train_state(config, key, image_shape, gen_tx, disc_tx, **kwargs))


def create_generator(config: RendererConfig, key: jax.Array, image_shape: Sequence[int]) -> dict[str, dict]:
  """`init_generator` (same arguments) compiled and run once, as `create_train_state` compiles: the
  generator alone, for inference and smoke runs (about a quarter less to compile for the tiny presets)."""
  return _compile_and_run(lambda: init_generator(config, key, image_shape))


def _compile_and_run(init: Callable[[], Any]) -> Any:
  """On CPU without XLA's backend optimisations (threefry-heavy init graphs otherwise take minutes to
  compile there); the options are XLA:CPU's, other backends compile normally."""
  return jax.jit(init).lower().compile(xla_options.cpu_options(**INIT_COMPILER_OPTIONS))()


def train_state_shapes(config: RendererConfig, image_shape: Sequence[int],
                       gen_tx: optax.GradientTransformation, disc_tx: optax.GradientTransformation,
                       **kwargs) -> RendererTrainState:
  """`init_train_state`'s pytree as `jax.ShapeDtypeStruct`s, without FLOPs (for sharding / checks)."""
  return jax.eval_shape(lambda: init_train_state(config, jax.random.key(0), image_shape, gen_tx, disc_tx,
                                                 **kwargs))


def make_step_fn(config: RendererConfig, gen_tx: optax.GradientTransformation,
                 disc_tx: optax.GradientTransformation, loss_weights: Mapping[str, float] | None = None, *,
                 ema_decay: float = 0.999,
                 perceptual_fn: Callable[[jax.Array], Sequence[jax.Array]] | None = None,
                 region: str | None = None,
                 ) -> Callable[[RendererTrainState, Batch], tuple[RendererTrainState, Metrics]]:
  """The pure `step(state, batch) -> (state, metrics)` (not jitted; `make_train_step` jits it).

  Generator losses: L1 reconstruction, hinge GAN + discriminator feature matching, equivariance (M on a
  random TPS warp of the driving image) and keypoint prior on implicit keypoints ("implicit" and
  "hybrid_body"), deformation prior (on delta, or on ΔX_head), the 2-D landmark loss L_lms of the body
  keypoints ("hybrid_body" with `body_kp_*` in the batch), and a region term.

  loss_weights: overrides of `DEFAULT_LOSS_WEIGHTS` (a weight of 0 removes a term's gradient; the
  term is still reported). perceptual_fn: image (B, H, W, 3) -> list of feature maps (a bound VGG-19);
  None (the default, no VGG weights shipped) turns the perceptual term off and makes the region term an
  L1 inside the mask. region: None, "hand" (L_Per^Hand on batch["hand_mask"]), "face" (L_Per^face on
  batch["face_mask"]) or "mouth" (on batch["mouth_mask"], the grown lip hull: not in the paper; the mouth
  is a few per cent of a head crop's pixels, so the whole-frame terms hardly see it).

  Batch (images in [0, 1], NHWC):
    source, driving: (B, H, W, 3) at `config.image_size` (two frames of one clip);
    driving_target: optional (B, Ho, Wo, 3) at `config.output_size` (the reconstruction target; default:
      `driving` bilinearly resized);
    kp_head_source, kp_head_driving: (B, num_kp_head, 3), required when `config.num_kp_head > 0`
      (explicit head-template keypoints);
    hand_image: (B, Hh, Wh, 3) G's injection image when `config.spade_generator.hand_injection`: the
      rendered hands (Eq. 5), or for face refine the head crop with the face masked out;
    body_kp_driving, body_kp_source (B, K_body, >= 2) and body_visibility_driving / _source (B, K_body):
      optional body landmarks for L_lms ("hybrid_body");
    hand_mask / face_mask / mouth_mask: (B, Ho, Wo, 1) for the region term.

  D runs once per step, on [target; generated]: the generator's adversarial terms and D's hinge loss are
  two backward passes through that one forward (the same parameters and inputs as two forward passes
  would see; the generator pass leaves D's parameters alone and D's leaves the generated images alone).

  Metrics: every generator term unweighted (l1, gan, feature_matching, equivariance, keypoint_prior,
  deformation_prior, perceptual, landmark, region; 0 where a term does not apply), gen_total (weighted
  sum), disc_loss, disc_real / disc_fake (mean logits), gen_grad_norm, disc_grad_norm,
  perceptual_enabled (0 or 1).
  """
  weights = {**DEFAULT_LOSS_WEIGHTS, **(loss_weights or {})}
  unknown = set(weights) - set(DEFAULT_LOSS_WEIGHTS)
  if unknown:
    raise ValueError(f"unknown loss weights {sorted(unknown)}; known: {sorted(DEFAULT_LOSS_WEIGHTS)}")
  if region is not None and region not in REGIONS:
    raise ValueError(f"region must be None or one of {sorted(REGIONS)}, got {region!r}")
  nets = networks(config)
  layout = keypoint_layout(config)
  implicit = layout != "head_offset"
  zero = jnp.zeros((), jnp.float32)

  def apply_gen(name, params, stats, *args, **kwargs):
    """A generator part in train mode; returns (output, new batch_stats)."""
    variables = {"params": params[name]}
    if name != "M":  # M (ConvNeXt-V2, LayerNorm only) has no train mode
      kwargs = {**kwargs, "train": True}
    if stats[name]:
      variables["batch_stats"] = stats[name]
      out, upd = nets[name].apply(variables, *args, mutable=["batch_stats"], **kwargs)
      return out, upd["batch_stats"]
    return nets[name].apply(variables, *args, **kwargs), stats[name]

  def apply_disc(params, stats, image):
    """D in train mode (spectral norm: one power iteration); returns (outputs, new batch_stats)."""
    variables = {"params": params, **({"batch_stats": stats} if stats else {})}
    if stats:
      out, upd = nets["D"].apply(variables, image, train=True, mutable=["batch_stats"])
      return out, upd["batch_stats"]
    return nets["D"].apply(variables, image, train=True), stats

  def split_halves(outputs):
    """D on concat([real, fake]) -> (real outputs, fake outputs)."""
    real = jax.tree.map(lambda x: x[: x.shape[0] // 2], outputs)
    fake = jax.tree.map(lambda x: x[x.shape[0] // 2:], outputs)
    return real, fake

  def gen_forward(gen_params, gen_stats, batch, key):
    """The generated images and the generator terms that do not need D."""
    source, driving = batch["source"], batch["driving"]
    b = source.shape[0]
    target = batch.get("driving_target")
    if target is None:
      target = resize_bilinear(driving, config.output_size)
    stats = dict(gen_stats)
    # M once on [source, driving] (+ a TPS-warped driving for the equivariance of implicit keypoints).
    images = [source, driving]
    if implicit:
      transform = losses.random_tps_transform(key, b)
      images.append(losses.warp_image(driving, transform))
    m_out, stats["M"] = apply_gen("M", gen_params, stats, jnp.concatenate(images))
    kp_head = None
    if config.num_kp_head:
      kp_head = jnp.concatenate([batch["kp_head_source"], batch["kp_head_driving"]])
      if implicit:
        kp_head = jnp.concatenate([kp_head, batch["kp_head_driving"]])
    control, kp_all, delta_all = control_keypoints(config, m_out, kp_head)
    control_s, control_d = control[:b], control[b:2 * b]
    volume, stats["F"] = apply_gen("F", gen_params, stats, source)
    w_out, stats["W"] = apply_gen("W", gen_params, stats, volume, control_d, control_s)
    hand = batch.get("hand_image") if config.spade_generator.hand_injection else None
    pred, stats["G"] = apply_gen("G", gen_params, stats, w_out["out"], hand,
                                 **skip_inputs(config.spade_generator, source, w_out))
    terms = {
        "l1": losses.l1_loss(pred, target),
        "equivariance": (losses.equivariance_loss(kp_all[b:2 * b], kp_all[2 * b:], transform) if implicit
                         else zero),
        "keypoint_prior": losses.keypoint_prior_loss(kp_all[: 2 * b]) if implicit else zero,
        "deformation_prior": losses.deformation_prior_loss(delta_all[: 2 * b]),
        "perceptual": (losses.vgg_perceptual_loss(perceptual_fn, pred, target) if perceptual_fn is not None
                       else zero),
        "landmark": zero,
        "region": zero,
    }
    if layout == "hybrid_body" and "body_kp_driving" in batch:
      n = config.motion_extractor.num_kp
      landmarks = jnp.concatenate([batch["body_kp_source"], batch["body_kp_driving"]])[:, :n, :2]
      visibility = jnp.concatenate([batch["body_visibility_source"], batch["body_visibility_driving"]])[:, :n]
      terms["landmark"] = losses.landmark_loss(kp_all[: 2 * b, :, :2], landmarks, visibility)
    if region is not None:
      mask = batch[REGIONS[region]]
      terms["region"] = (losses.region_perceptual_loss(perceptual_fn, pred, target, mask)
                         if perceptual_fn is not None else losses.l1_loss(pred, target, mask))
    partial = sum(weights[k] * v for k, v in terms.items())
    return (pred, partial), (terms, stats, target)

  def adversarial_terms(d_out):
    """The generator's terms of D's outputs on [real; fake]: hinge GAN and feature matching."""
    d_real, d_fake = split_halves(d_out)
    terms = {"gan": losses.gan_generator_loss(d_fake),
             "feature_matching": losses.feature_matching_loss([o["features"] for o in d_real],
                                                              [o["features"] for o in d_fake])}
    return sum(weights[k] * v for k, v in terms.items()), terms

  def disc_objective(d_out):
    """D's hinge loss of its outputs on [real; fake], and the mean logits of each half."""
    d_real, d_fake = split_halves(d_out)
    logits = lambda outs: jnp.mean(jnp.stack([jnp.mean(o["logits"]) for o in outs]))
    return losses.gan_discriminator_loss(d_real, d_fake), (logits(d_real), logits(d_fake))

  def step(state: RendererTrainState, batch: Batch):
    key = jax.random.fold_in(state["rng"], state["step"])
    gen, disc = state["gen"], state["disc"]
    (pred, partial), gen_vjp, (gen_terms, g_stats, target) = jax.vjp(
        lambda p: gen_forward(p, gen["batch_stats"], batch, key), gen["params"], has_aux=True)
    # D once on [real; fake]; its spectral-norm power iteration and batch statistics are D's own update.
    d_out, d_vjp, d_stats = jax.vjp(lambda p, x: apply_disc(p, disc["batch_stats"], x), disc["params"],
                                    jnp.concatenate([target, pred]), has_aux=True)
    (adversarial, adv_terms), adv_cot = jax.value_and_grad(adversarial_terms, has_aux=True)(d_out)
    _, image_cot = d_vjp(adv_cot)
    (d_total, (d_real, d_fake)), d_cot = jax.value_and_grad(disc_objective, has_aux=True)(d_out)
    d_grads, _ = d_vjp(d_cot)
    b = pred.shape[0]
    (g_grads,) = gen_vjp((image_cot[b:].astype(pred.dtype), jnp.ones_like(partial)))
    g_total = partial + adversarial
    terms = {**gen_terms, **adv_terms}
    g_updates, g_opt = gen_tx.update(g_grads, gen["opt_state"], gen["params"])
    g_params = optax.apply_updates(gen["params"], g_updates)
    d_updates, d_opt = disc_tx.update(d_grads, disc["opt_state"], disc["params"])
    d_params = optax.apply_updates(disc["params"], d_updates)

    ema = state["ema"]
    if ema is not None:
      ema = ema_lib.update(ema, g_params, ema_decay, state["step"])
    new_state = {
        **state,  # keys a caller keeps beside the networks (e.g. the trainer's "norm")
        "gen": {"params": g_params, "batch_stats": g_stats, "opt_state": g_opt},
        "disc": {"params": d_params, "batch_stats": d_stats, "opt_state": d_opt},
        "ema": ema,
        "step": state["step"] + 1,
        "rng": state["rng"],
    }
    metrics = {
        **terms,
        "gen_total": g_total,
        "disc_loss": d_total,
        "disc_real": d_real,
        "disc_fake": d_fake,
        "gen_grad_norm": tree_math.global_norm(g_grads),
        "disc_grad_norm": tree_math.global_norm(d_grads),
        "perceptual_enabled": jnp.asarray(float(perceptual_fn is not None), jnp.float32),
    }
    return new_state, metrics

  return step


def make_train_step(config: RendererConfig, gen_tx: optax.GradientTransformation,
                    disc_tx: optax.GradientTransformation, loss_weights: Mapping[str, float] | None = None, *,
                    ema_decay: float = 0.999,
                    perceptual_fn: Callable[[jax.Array], Sequence[jax.Array]] | None = None,
                    region: str | None = None,
                    ) -> Callable[[RendererTrainState, Batch], tuple[RendererTrainState, Metrics]]:
  """`make_step_fn`'s step as one jitted call with the state donated (argument 0)."""
  return jax.jit(make_step_fn(config, gen_tx, disc_tx, loss_weights, ema_decay=ema_decay,
                              perceptual_fn=perceptual_fn, region=region), donate_argnums=0,
                 compiler_options=xla_options.cpu_options())


def reenactment_keypoints(config: RendererConfig, m_out: dict[str, jax.Array], kp_head: jax.Array | None,
                          source_offsets: bool = False) -> jax.Array:
  """W's control keypoints (2B, K, 3) of M's outputs on [sources; drivings] (`control_keypoints`); with
  source_offsets (layout "head_offset") the drivings' keypoints are their head keypoints plus the
  sources' implicit offsets (`reconstruct`)."""
  control, offsets, _ = control_keypoints(config, m_out, kp_head)
  if not source_offsets:
    return control
  b = control.shape[0] // 2
  return jnp.concatenate([control[:b], kp_head[b:] + offsets[:b]])


def reconstruct(config: RendererConfig, gen_params: Any, gen_batch_stats: Any, source: jax.Array,
                driving: jax.Array, hand_image: jax.Array | None = None,
                kp_head: tuple[jax.Array, jax.Array] | None = None,
                source_offsets: bool = False) -> jax.Array:
  """Inference-mode self-reenactment: G(W(F(source), kp(driving), kp(source))) -> (B, Ho, Wo, 3).

  kp_head: (source, driving) head keypoints (B, num_kp_head, 3) when `config.num_kp_head > 0`.
  hand_image: G's injection image when `config.spade_generator.hand_injection`.
  source_offsets: layout "head_offset" only: the driving keypoints take the source's implicit offsets
    ΔX_src instead of M's on the driving frame, as the stream does (`stream_step.init_state`), so only the
    explicit head keypoints move the face.
  """
  if source_offsets and keypoint_layout(config) != "head_offset":
    raise ValueError("source_offsets needs a 'head_offset' renderer (head or face refine)")
  nets = networks(config)

  def apply(name, *args, **kwargs):
    variables = {"params": gen_params[name]}
    if gen_batch_stats[name]:
      variables["batch_stats"] = gen_batch_stats[name]
    return nets[name].apply(variables, *args, **kwargs)

  b = source.shape[0]
  m_out = apply("M", jnp.concatenate([source, driving]))
  head = jnp.concatenate(kp_head) if config.num_kp_head else None
  control = reenactment_keypoints(config, m_out, head, source_offsets)
  w_out = apply("W", apply("F", source), control[b:], control[:b])
  hand = hand_image if config.spade_generator.hand_injection else None
  return apply("G", w_out["out"], hand, **skip_inputs(config.spade_generator, source, w_out))
