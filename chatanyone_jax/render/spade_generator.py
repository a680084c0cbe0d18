"""G: LivePortrait's SPADE decoder, warped 2D features -> RGB image.

fc conv -> 6 SPADE residual blocks -> (x2, SPADE block) x 2 -> LeakyReLU ->
conv -> pixel shuffle -> sigmoid. The warped feature map itself is the
segmentation map of every SPADE (resized to each block's resolution). The
conv before the pixel shuffle starts ICNR-initialised (`ops.icnr`: its four
sub-pixel kernels equal), which only changes the random initialisation:
converted weights load as they are.

With `config.source_skip` (not LivePortrait's) a second head predicts a per-pixel alpha, and the image is
alpha G + (1 - alpha) S, S = the source image warped in 2-D by W's flow (`source_skip_image`).

Spectral norm (LivePortrait wraps the residual blocks' convs in it): for
inference a checkpoint converts to plain convs holding the effective weight
(`spectral_norm=False`, the default); for training `spectral_norm=True` uses
`SpectralConv`, which follows PyTorch in both modes. The parameter trees of
both modes are identical.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from chatanyone_jax.layers.blocks import conv
from chatanyone_jax.layers.norm import SPADE
from chatanyone_jax.ops.grid_sample import grid_sample
from chatanyone_jax.ops.heatmaps import make_coordinate_grid
from chatanyone_jax.ops.resample import icnr, pixel_shuffle, upsample_nearest
from chatanyone_jax.render.hand_injection import HandEncoder, HandInjection
from chatanyone_jax.render.presets import SPADEDecoderConfig

SN_EPS = 1e-12
# The alpha head's starting logit: G's output begins as 12 % of the image, the warped source 88 %.
SKIP_ALPHA_OFFSET = -2.0


def source_skip_image(source: jax.Array, flow: jax.Array, size: tuple[int, int]) -> jax.Array:
  """The source image (B, Hs, Ws, 3) warped by W's 2-D flow (B, h, w, 2) at G's output size (Ho, Wo).

  The flow (a sampling grid in `make_coordinate_grid` units, whose identity is linspace(-1, 1)) is
  upsampled as a displacement from that identity and added to the output's pixel-centre grid, clamped
  to the outermost pixel centres: at zero displacement this is exactly the bilinear upsampling of the
  source (copying the source frame).
  """
  h, w = flow.shape[1:3]
  ho, wo = size
  disp = flow - make_coordinate_grid((h, w), flow.dtype)
  disp = jax.image.resize(disp, (disp.shape[0], ho, wo, 2), "linear")
  hs, ws = source.shape[1:3]
  centres = lambda n: (2 * jnp.arange(n, dtype=flow.dtype) + 1) / n - 1
  gx, gy = jnp.meshgrid(centres(wo), centres(ho))  # (Ho, Wo)
  grid = jnp.stack([gx, gy], axis=-1) + disp
  lim = jnp.asarray([1 - 1 / ws, 1 - 1 / hs], flow.dtype)
  return grid_sample(source.astype(jnp.float32), jnp.clip(grid, -lim, lim).astype(jnp.float32))


def _l2_normalize(x: jax.Array, eps: float = SN_EPS) -> jax.Array:
  return x / jnp.maximum(jnp.linalg.norm(x), eps)  # torch.nn.functional.normalize


def _random_unit(key: jax.Array, n: int) -> jax.Array:
  return _l2_normalize(jax.random.normal(key, (n,), jnp.float32))


def skip_inputs(config: SPADEDecoderConfig, source: jax.Array, warped: dict) -> dict[str, jax.Array]:
  """G's keyword inputs of the source skip: {source, flow} when `config.source_skip`, else {}.

  source: the source image (B, Hs, Ws, 3) W's volume came from; warped: W's output dict.
  """
  if not config.source_skip:
    return {}
  b = warped["flow"].shape[0]
  return {"source": jnp.broadcast_to(source, (b,) + source.shape[1:]), "flow": warped["flow"]}


class SpectralConv(nn.Module):
  """2D conv with PyTorch's spectral normalisation (n_power_iterations 1, eps 1e-12, dim 0).

  Params: kernel (kh, kw, in, out) = weight_orig, bias. `batch_stats`: u (out,)
  and v (in * kh * kw,) in PyTorch's flattening of (out, in, kh, kw), so a
  checkpoint's weight_u / weight_v load unchanged.

  * train: v <- normalize(W^T u), u <- normalize(W v) (stop-gradient, stored),
    sigma = u . (W v);
  * eval: sigma = u . (W v) with the stored u, v.
  Output: conv(x, kernel / sigma) + bias.

  PyTorch's eval mode uses W / sigma from the stored u, v without power iteration, which is why this is
  used instead of `flax.linen.SpectralNorm` (that one also iterates in eval mode, so it cannot
  reproduce PyTorch's eval forward from a checkpoint's u, v).
  """
  features: int
  kernel_size: int = 3
  use_bias: bool = True
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    k, cin = self.kernel_size, x.shape[-1]
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (k, k, cin, self.features), jnp.float32)
    w_mat = jnp.transpose(kernel, (3, 2, 0, 1)).reshape(self.features, -1)  # PyTorch's (out, in*kh*kw)
    u = self.variable("batch_stats", "u", lambda: _random_unit(self.make_rng("params"), self.features))
    v = self.variable("batch_stats", "v", lambda: _random_unit(self.make_rng("params"), w_mat.shape[1]))
    uu, vv = u.value, v.value
    if train:
      w_sg = jax.lax.stop_gradient(w_mat)
      vv = _l2_normalize(w_sg.T @ uu)
      uu = _l2_normalize(w_sg @ vv)
      if not self.is_initializing():
        u.value, v.value = uu, vv
    sigma = jnp.dot(uu, w_mat @ vv)
    pad = k // 2
    y = jax.lax.conv_general_dilated(
        x, (kernel / sigma).astype(self.dtype or x.dtype), (1, 1), [(pad, pad)] * 2,
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    if self.use_bias:
      bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
      y = y + bias.astype(y.dtype)
    return y


def maybe_spectral_conv(spectral_norm: bool, features: int, kernel: int, name: str, *,
                        use_bias: bool = True, dtype=None):
  """A `SpectralConv`, or a plain zero-padded conv with the same `(x, train=...)` call signature.

  Call inside a compact module (like `layers.blocks.conv`).
  """
  if spectral_norm:
    return SpectralConv(features, kernel, use_bias, name=name, dtype=dtype)
  plain = conv(features, 2, kernel, use_bias=use_bias, name=name, dtype=dtype)
  return lambda x, train: plain(x)


class SPADEResnetBlock(nn.Module):
  """SPADE residual block (fin -> fout, fmiddle = min(fin, fout)). (B, H, W, fin) -> (B, H, W, fout).

  out = shortcut(x) + conv_1(lrelu(SPADE_1(conv_0(lrelu(SPADE_0(x, seg))), seg))), lrelu slope 0.2;
  shortcut = conv_s(SPADE_s(x, seg)) (1x1, no bias) when fin != fout, else x.
  """
  features: int
  spectral_norm: bool = False
  spade_hidden: int = 128
  dtype: jnp.dtype | None = None

  def _conv(self, features: int, kernel: int, name: str, use_bias: bool = True):
    return maybe_spectral_conv(self.spectral_norm, features, kernel, name, use_bias=use_bias,
                               dtype=self.dtype)

  @nn.compact
  def __call__(self, x: jax.Array, seg: jax.Array, *, train: bool = False) -> jax.Array:
    fin, fout = x.shape[-1], self.features
    fmiddle = min(fin, fout)

    def spade(name):
      return SPADE(self.spade_hidden, name=name, dtype=self.dtype)

    if fin != fout:
      x_s = self._conv(fout, 1, "conv_s", use_bias=False)(spade("norm_s")(x, seg), train=train)
    else:
      x_s = x
    dx = self._conv(fmiddle, 3, "conv_0")(nn.leaky_relu(spade("norm_0")(x, seg), 0.2), train=train)
    dx = self._conv(fout, 3, "conv_1")(nn.leaky_relu(spade("norm_1")(dx, seg), 0.2), train=train)
    return x_s + dx


class SPADEDecoder(nn.Module):
  """Warped features (B, H, W, Cin) -> image (B, 4 H r, 4 W r, 3) in (0, 1), r = 2 if upscale > 1 else 1.

  With LivePortrait's config: (B, 64, 64, 256) -> (B, 512, 512, 3). `train`
  only matters with `spectral_norm=True` (power iteration); G has no BatchNorm.

  With `config.hand_injection` the decoder also takes `hand_image` (B, Hh, Wh, 3)
  (any size; resized to 4H x 4W) and adds a zero-gated AdaIN residual of its
  features after the last G_middle block (1x), up_0 (2x) and up_1 (4x) (paper Eq. 5). The
  LivePortrait parameters keep their names; the branch adds `hand_encoder` and
  `hand_inject_{0,1,2}`. Without the flag (or with `hand_image=None`, which
  then skips the branch) this is LivePortrait's G unchanged.

  With `config.source_skip` the call also needs `source` (B, Hs, Ws, 3), the source image in [0, 1], and
  `flow` (B, H, W, 2), W's 2-D flow; `conv_alpha` adds the alpha head (module docstring).
  """
  config: SPADEDecoderConfig = SPADEDecoderConfig()
  spectral_norm: bool = False
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, feature: jax.Array, hand_image: jax.Array | None = None, *,
               source: jax.Array | None = None, flow: jax.Array | None = None,
               train: bool = False) -> jax.Array:
    cfg = self.config
    cin = cfg.input_channels
    if cfg.source_skip and (source is None or flow is None):
      raise ValueError("this decoder has the source skip (config.source_skip): pass source= (the source "
                       "image) and flow= (W's output 'flow')")
    if feature.shape[-1] != cin:
      raise ValueError(f"feature has {feature.shape[-1]} channels, the decoder expects {cin}")
    if hand_image is not None and not cfg.hand_injection:
      raise ValueError("hand_image given but config.hand_injection is off")
    hand = None
    if hand_image is not None:
      h, w = feature.shape[1:3]
      hand = HandEncoder(cfg.hand_block_expansion, cfg.hand_max_features, name="hand_encoder",
                         dtype=self.dtype)(hand_image, [(4 * h, 4 * w), (2 * h, 2 * w), (h, w)])

    def inject(x, level):  # level 0: 4x, 1: 2x, 2: 1x resolution
      if hand is None:
        return x
      return HandInjection(cfg.hand_hidden, name=f"hand_inject_{2 - level}", dtype=self.dtype)(x, hand[level])

    def block(features, name):
      return SPADEResnetBlock(features, self.spectral_norm, cfg.spade_hidden, name=name, dtype=self.dtype)

    seg = feature
    x = conv(2 * cin, 2, 3, name="fc", dtype=self.dtype)(feature)
    for i in range(cfg.num_middle_blocks):
      x = block(2 * cin, f"G_middle_{i}")(x, seg, train=train)
      self.sow("intermediates", f"G_middle_{i}_out", x)
    x = inject(x, 2)
    x = block(cin, "up_0")(upsample_nearest(x, 2), seg, train=train)
    self.sow("intermediates", "up_0_out", x)
    x = inject(x, 1)
    x = block(cfg.out_channels, "up_1")(upsample_nearest(x, 2), seg, train=train)
    self.sow("intermediates", "up_1_out", x)
    x = inject(x, 0)
    x = nn.leaky_relu(x, 0.2)
    shuffle = cfg.upscale is not None and cfg.upscale > 1  # LivePortrait: conv -> PixelShuffle(2)

    def head(channels, name, kernel_init=nn.linear.default_kernel_init):
      r2 = 4 if shuffle else 1
      init = icnr(kernel_init, 2) if shuffle else kernel_init  # ICNR: no checkerboard (`icnr`)
      y = nn.Conv(channels * r2, (3, 3), padding=[(1, 1)] * 2, name=name, dtype=self.dtype,
                  kernel_init=init)(x)
      return pixel_shuffle(y, 2) if shuffle else y

    image = head(3, "conv_img")
    self.sow("intermediates", "conv_img_out", image)
    image = jax.nn.sigmoid(image.astype(jnp.float32))
    if not cfg.source_skip:
      return image
    # A zero kernel: alpha starts at sigmoid(SKIP_ALPHA_OFFSET) everywhere (the kernel still gets gradients).
    alpha_logit = head(1, "conv_alpha", kernel_init=nn.initializers.zeros)
    alpha = jax.nn.sigmoid(alpha_logit.astype(jnp.float32) + SKIP_ALPHA_OFFSET)
    self.sow("intermediates", "skip_alpha", alpha)
    return alpha * image + (1 - alpha) * source_skip_image(source, flow, image.shape[1:3])
