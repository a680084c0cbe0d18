"""FaceMotionDiT: audio -> face motion (52 expression + 6 pose per frame), paper §3.3 (bottom of Fig. 3).

A diffusion transformer (DiT, Peebles & Xie 2023) that predicts the noise ε of a
noisy face-motion window x_t (B, T, 58) (paper Eq. 1). Conditioning: audio
tokens (one per video frame) and the last H generated frames of the previous
window (history) by cross-attention; the timestep plus coarse style controls
(`style_controls`) in the AdaLN-Zero vector c; an optional reference expression
sequence (B, T_ref, 52 or 58) concatenated along time with the noisy tokens
(only the T noisy positions are returned; `reference_valid=False` uses the
learned null reference).

Classifier-free guidance: a per-sample boolean `drop` (B,) replaces audio,
history, style and reference with learned null embeddings. Every residual
branch is gated by AdaLN-Zero, so at init each block is the identity and ε_θ ≡ 0.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from chatanyone_jax.layers import AdaLNZero, AdaLNZeroFinal, MultiHeadAttention
from chatanyone_jax.motion.diffusion import PREDICTIONS
from chatanyone_jax.ops import modulate, sinusoidal_positions, timestep_embedding
from chatanyone_jax.ops.init_rng import init_key
from chatanyone_jax.template.head_template import NUM_EXP  # 52 expression coefficients (the head template's)

NUM_POSE = 6
MOTION_DIM = NUM_EXP + NUM_POSE  # 58
NUM_STYLE = 2  # (expression amplitude, head-pose range)


@dataclasses.dataclass(frozen=True)
class FaceMotionConfig:
  """FaceMotionDiT hyper-parameters; defaults are the paper's (6 layers) and ours (width 512, 8 heads).

  Attributes:
    num_layers / width / num_heads / mlp_ratio: the transformer.
    window: T, frames per generated window (40 at 30 fps = 1.33 s).
    history: H, frames of previous motion the next window attends to.
    motion_dim: per-frame target, 52 expression + 6 pose.
    audio_dim: width of the incoming audio tokens (AudioEncoder.width).
    ref_dim: per-frame width of the reference sequence (52 expression, or 58).
    num_style: number of scalar style controls.
    time_embed_dim: width of the sinusoidal timestep features.
    p_drop: training probability of dropping all conditions (CFG).
    audio_add: also add each frame's projected audio token to that frame's noisy motion token. The
      paper's cross-attention alone must learn which audio token belongs to which frame from the shared
      positions; the sum gives that alignment by construction (dropped with the other conditions).
    prediction: what the network outputs, "epsilon" (the paper's Eq. 1) or "x0" (the clean window;
      `diffusion.diffusion_loss`); the samplers read it from here.
  """
  num_layers: int = 6
  width: int = 512
  num_heads: int = 8
  mlp_ratio: int = 4
  window: int = 40
  history: int = 10
  motion_dim: int = MOTION_DIM
  audio_dim: int = 256
  ref_dim: int = NUM_EXP
  num_style: int = NUM_STYLE
  time_embed_dim: int = 256
  p_drop: float = 0.1
  audio_add: bool = False
  prediction: str = "epsilon"

  def __post_init__(self):
    if self.prediction not in PREDICTIONS:
      raise ValueError(f"prediction must be one of {PREDICTIONS}, got {self.prediction!r}")

  @classmethod
  def tiny(cls, **overrides) -> FaceMotionConfig:
    """CPU-test preset: the "tiny" variant (same T, H and motion layout)."""
    return cls(**{**decode_variant("tiny")["dit"], **overrides})


# Named model sizes (big_vision's `decode_variant`): a training config names a variant, this table owns
# the widths and depths. "dit": FaceMotionConfig fields; "audio": the AudioEncoder trained jointly with it
# (its width is the DiT's audio_dim). base = FaceMotionConfig's and AudioEncoder's defaults (the paper's 6
# layers); small = the model of benchmarks/motion_style.py and motion_overfit.py; tiny = CPU tests.
VARIANTS: dict[str, dict[str, dict[str, int]]] = {
    "base": {"dit": dict(num_layers=6, width=512, num_heads=8, mlp_ratio=4, audio_dim=256,
                         time_embed_dim=256),
             "audio": dict(num_layers=2, num_heads=4, mlp_ratio=4, num_conv=2)},
    "small": {"dit": dict(num_layers=4, width=128, num_heads=4, mlp_ratio=4, audio_dim=64,
                          time_embed_dim=64),
              "audio": dict(num_layers=1, num_heads=4, mlp_ratio=4, num_conv=2)},
    "tiny": {"dit": dict(num_layers=2, width=64, num_heads=4, mlp_ratio=2, audio_dim=32,
                         time_embed_dim=32),
             "audio": dict(num_layers=1, num_heads=4, mlp_ratio=2, num_conv=2)},
}


def decode_variant(variant: str | None) -> dict[str, dict[str, int]]:
  """{"dit": FaceMotionConfig sizes, "audio": AudioEncoder sizes} of a named variant (`VARIANTS`).

  None gives {} (a config that spells every size out itself, as configs written before variants did).
  """
  return variant_sizes(VARIANTS, variant, "FaceMotionDiT")


def variant_sizes(variants: dict[str, dict[str, dict[str, int]]], variant: str | None,
                  model: str) -> dict[str, dict[str, int]]:
  """A copy of `variants[variant]` ({part: sizes}); {} for None; a clear error for an unknown name."""
  if variant is None:
    return {}
  if variant not in variants:
    raise ValueError(f"unknown {model} variant {variant!r} (have: {', '.join(variants)})")
  return {part: dict(sizes) for part, sizes in variants[variant].items()}


def style_controls(motion: jax.Array, num_exp: int = NUM_EXP) -> jax.Array:
  """Coarse style controls of a motion window, the training targets of the `style` input.

  expression amplitude = std over time of the expression coefficients (mean over
  coefficients); head-pose range = (max - min) over time of the 6 pose values
  (mean over values). At inference the user sets them (e.g. scaled from a clip).

  Args:
    motion: (B, T, 52 + 6).

  Returns:
    (B, 2) float32.
  """
  m = motion.astype(jnp.float32)
  exp, pose = m[..., :num_exp], m[..., num_exp:]
  amp = jnp.mean(jnp.std(exp, axis=1), axis=-1)
  rng = jnp.mean(jnp.max(pose, axis=1) - jnp.min(pose, axis=1), axis=-1)
  return jnp.stack([amp, rng], axis=-1)


class MLP(nn.Module):
  """Dense -> GELU -> Dense, hidden width `hidden`; the output layer optionally zero-initialised."""
  hidden: int
  out: int
  zero_init_out: bool = False
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = nn.gelu(nn.Dense(self.hidden, name="fc1", dtype=self.dtype)(x))
    init = nn.initializers.zeros if self.zero_init_out else nn.initializers.lecun_normal()
    return nn.Dense(self.out, kernel_init=init, name="fc2", dtype=self.dtype)(h)


class DiTBlock(nn.Module):
  """AdaLN-Zero DiT block with self-attention, one cross-attention per context, and an MLP.

  For each branch f (self-attention, cross-attention to contexts[0], ...,
  MLP): x <- x + gate ⊙ f(modulate(LN(x), shift, scale)), with (shift, scale,
  gate) from `AdaLNZero(c)`; gates start at 0, so the block starts as the identity.
  """
  num_heads: int
  mlp_ratio: int = 4
  num_contexts: int = 2
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array, c: jax.Array, contexts: tuple[jax.Array, ...]) -> jax.Array:
    """x: (B, N, D) tokens; c: (B, D) conditioning; contexts: num_contexts x (B, M_i, D).

    Returns (B, N, D).
    """
    if len(contexts) != self.num_contexts:
      raise ValueError(f"expected {self.num_contexts} contexts, got {len(contexts)}")
    d = x.shape[-1]
    mods = AdaLNZero(d, 3 * (self.num_contexts + 2), dtype=self.dtype, name="ada")(c)
    norm = lambda i: nn.LayerNorm(use_scale=False, use_bias=False, epsilon=1e-6, dtype=self.dtype,
                                  name=f"norm{i}")
    branches = [lambda h: MultiHeadAttention(self.num_heads, dtype=self.dtype, name="self_attn")(h)]
    for j, ctx in enumerate(contexts):
      branches.append(lambda h, ctx=ctx, j=j: MultiHeadAttention(
          self.num_heads, dtype=self.dtype, name=f"cross_attn{j}")(h, ctx))
    branches.append(lambda h: MLP(self.mlp_ratio * d, d, dtype=self.dtype, name="mlp")(h))
    for i, f in enumerate(branches):
      shift, scale, gate = mods[3 * i: 3 * i + 3]
      x = x + gate[:, None] * f(modulate(norm(i)(x), shift, scale))
    return x


class TimestepEmbedder(nn.Module):
  """t (B,) -> sinusoidal features -> Dense -> SiLU -> Dense: (B, width)."""
  width: int
  freq_dim: int = 256
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, t: jax.Array) -> jax.Array:
    h = timestep_embedding(t, self.freq_dim)
    h = nn.silu(nn.Dense(self.width, name="fc1", dtype=self.dtype)(h))
    return nn.Dense(self.width, name="fc2", dtype=self.dtype)(h)


def _either(drop: jax.Array | None, valid: jax.Array | None) -> jax.Array | None:
  """Where to use the null embedding: drop | ~valid, either may be None (= all False / all True); drop is
  per sample (B,), valid per sample (B,) or per frame (B, T) (the result then per frame)."""
  if valid is None:
    return drop
  off = ~jnp.asarray(valid, bool)
  if drop is None:
    return off
  drop = jnp.asarray(drop, bool)
  return drop.reshape(drop.shape + (1,) * (off.ndim - drop.ndim)) | off


def _select(drop: jax.Array | None, null: jax.Array, value: jax.Array) -> jax.Array:
  """Switch: null where drop is True, else value; drop is per sample (B,) or per frame (B, T), and null
  broadcasts against value."""
  if drop is None:
    return value
  drop = jnp.asarray(drop, bool)
  d = drop.reshape(drop.shape + (1,) * (value.ndim - drop.ndim))
  return jnp.where(d, jnp.broadcast_to(null.astype(value.dtype), value.shape), value)


class FaceMotionDiT(nn.Module):
  """ε_θ(x_t, t, audio, history, style[, reference]) for face motion windows.

  History: the last H generated frames of the previous window, so consecutive windows join smoothly
  (`sampling.generate_long`). Reference: a learned segment embedding tells its tokens from the noisy
  ones; with `reference_valid=False` they become the learned null reference, which training shows with
  probability `p_reference_drop` (train/tasks.py). `drop` is drawn in training with probability
  `p_drop`; sampling stacks the (cond, uncond) pair (`sampling.make_denoise_fn`). The output layer is
  `AdaLNZeroFinal`.
  """
  config: FaceMotionConfig
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x_t: jax.Array, t: jax.Array, audio: jax.Array, history: jax.Array, style: jax.Array,
               reference: jax.Array | None = None, *, drop: jax.Array | None = None,
               history_valid: jax.Array | None = None,
               reference_valid: jax.Array | None = None,
               audio_valid: jax.Array | None = None) -> jax.Array:
    """Predicts the noise of one window.

    Args:
      x_t: (B, T, motion_dim) noisy motion.
      t: (B,) int diffusion steps.
      audio: (B, T, audio_dim) audio tokens aligned with the T frames.
      history: (B, H, motion_dim) the H frames just before the window.
      style: (B, num_style) style controls (`style_controls`).
      reference: optional (B, T_ref, ref_dim) reference expression sequence (any
        static T_ref); None = no reference tokens at all.
      drop: optional (B,) bool, True = all conditions replaced by their learned
        null embeddings (classifier-free guidance).
      history_valid: optional (B,) bool, False = no history yet (first window):
        the null history is used.
      reference_valid: optional (B,) bool, False = no reference video: the
        reference tokens are the learned null reference (pass any array of the
        reference's shape, e.g. zeros).
      audio_valid: optional (B, T) bool, False = that frame's audio has not been heard yet (the
        low-latency stream knows only the first hop + look-ahead frames of a window): its audio token is
        the learned null audio, as a dropped condition's, so the model tells "not heard yet" from
        silence. Training shows it with look-ahead augmentation (`data.lookahead`). None = all heard.

    Returns:
      (B, T, motion_dim) float32 ε prediction, or x̂0 with config.prediction "x0" (exactly 0 at init).
    """
    cfg = self.config
    b, n, _ = x_t.shape
    d, h = cfg.width, history.shape[1]
    dense = lambda f, name: nn.Dense(f, name=name, dtype=self.dtype)
    null = lambda name, shape: self.param(name, nn.initializers.normal(0.02), shape, jnp.float32)
    # One time axis for history, window and audio: history frames at 0..H-1, the window at H..H+T-1.
    pos = sinusoidal_positions(h + n, d)  # (H + T, D)

    # Style: c = emb(t) + emb(style).
    s = nn.silu(dense(d, "style_fc1")(style.astype(jnp.float32)))
    s = _select(drop, null("null_style", (d,)), dense(d, "style_fc2")(s))  # (B, D)
    c = TimestepEmbedder(d, cfg.time_embed_dim, dtype=self.dtype, name="t_embed")(t) + s  # (B, D)

    # Contexts (B, M, D): audio tokens and history.
    no_audio = _either(drop, audio_valid)  # (B,) or, with audio_valid, (B, T)
    a = _select(no_audio, null("null_audio", (d,)), dense(d, "audio_proj")(audio)) + pos[h:]  # (B, T, D)
    hist = dense(d, "history_proj")(history)  # (B, H, D)
    no_hist = _either(drop, history_valid)
    hist = _select(no_hist, null("null_history", (h, d)), hist) + pos[:h]  # (B, H, D)

    # Tokens: noisy window (+ reference sequence along time).
    seg = null("segment", (2, d))
    x = dense(d, "input_proj")(x_t) + pos[h:] + seg[0]  # (B, T, D)
    if cfg.audio_add:  # frame-aligned audio (zero for a dropped condition)
      x = x + _select(no_audio, jnp.zeros((d,)), dense(d, "audio_add")(audio))
    if reference is not None:
      r = dense(d, "ref_proj")(reference)  # (B, T_ref, D)
      r = _select(_either(drop, reference_valid), null("null_ref", (d,)), r)
      r = r + sinusoidal_positions(reference.shape[1], d) + seg[1]
      x = jnp.concatenate([x, r.astype(x.dtype)], axis=1)  # (B, T + T_ref, D)

    for i in range(cfg.num_layers):
      x = DiTBlock(cfg.num_heads, cfg.mlp_ratio, 2, dtype=self.dtype, name=f"block{i}")(x, c, (a, hist))
    out = AdaLNZeroFinal(cfg.motion_dim, dtype=self.dtype, name="final")(x[:, :n], c)
    return out.astype(jnp.float32)

  def init_params(self, key: jax.Array, batch: int = 1, ref_len: int | None = 8) -> dict:
    """Initialises all parameters (the reference branch too when ref_len is set) at batch size `batch`,
    from `init_key(key)` (`chatanyone_jax.ops.init_rng`: a hash PRNG that compiles far faster)."""
    cfg = self.config
    args = dummy_inputs(cfg, batch, ref_len)
    return self.init(init_key(key), *args, drop=jnp.zeros((batch,), bool))["params"]


def dummy_inputs(cfg: FaceMotionConfig, batch: int = 1, ref_len: int | None = 8) -> tuple:
  """Zero inputs of the right shapes: (x_t, t, audio, history, style, reference)."""
  z = lambda *s: jnp.zeros(s, jnp.float32)
  ref = None if ref_len is None else z(batch, ref_len, cfg.ref_dim)
  return (z(batch, cfg.window, cfg.motion_dim), jnp.zeros((batch,), jnp.int32),
          z(batch, cfg.window, cfg.audio_dim), z(batch, cfg.history, cfg.motion_dim),
          z(batch, cfg.num_style), ref)
