"""2-D / 3-D convolution blocks of the LivePortrait renderer, channels-last.

Names and structure follow LivePortrait's `modules/util.py` (SameBlock2d,
DownBlock2d/3d, UpBlock2d/3d, ResBlock2d/3d) so converted PyTorch weights map
one to one (`chatanyone_jax.layers.torch_compat`).

Normalisation is `BatchNorm` below, which follows PyTorch in eval and in
train mode (running statistics in the `batch_stats` collection).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from chatanyone_jax.ops.resample import upsample_nearest

BN_MOMENTUM = 0.1  # PyTorch's convention: new = (1 - m) * old + m * batch
BN_EPS = 1e-5


class BatchNorm(nn.Module):
  """BatchNorm with PyTorch's semantics in both modes, channels-last.

  * eval: y = (x - running_mean) / sqrt(running_var + eps) * scale + bias;
  * train: normalises with the biased batch variance and updates
    running_mean / running_var with momentum 0.1, using the *unbiased* batch
    variance for running_var (Flax's `nn.BatchNorm` uses the biased one).

  Parameters live in `params` ({scale, bias}) and running statistics in
  `batch_stats` ({mean, var}), the same names as `flax.linen.BatchNorm`, so
  converted LivePortrait checkpoints fine-tune exactly as in PyTorch. Under
  `jax.jit` with a batch-sharded input the statistics are global (XLA inserts
  the cross-device reduction), i.e. synchronised BatchNorm.
  """
  momentum: float = BN_MOMENTUM
  epsilon: float = BN_EPS
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
    ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
    ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
    xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    if train:
      axes = tuple(range(x.ndim - 1))
      mean = jnp.mean(xf, axis=axes)
      var = jnp.mean(jnp.square(xf - mean), axis=axes)
      if not self.is_initializing():
        n = x.size // c
        unbiased = var * (n / max(n - 1, 1))
        m = self.momentum
        ra_mean.value = (1 - m) * ra_mean.value + m * jax.lax.stop_gradient(mean)
        ra_var.value = (1 - m) * ra_var.value + m * jax.lax.stop_gradient(unbiased)
    else:
      mean, var = ra_mean.value, ra_var.value
    y = (xf - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias
    return y.astype(self.dtype or x.dtype)


def batch_norm(train: bool, name: str | None = None, dtype=None):
  """`BatchNorm` bound to a mode, for `x = batch_norm(train, "norm")(x)`."""
  bn = BatchNorm(dtype=dtype, name=name)
  return lambda x: bn(x, train=train)


class DepthFoldedConv3d(nn.Module):
  """A stride-1 3-D convolution computed as a 2-D one: the depth taps are stacked into channels.

  (N, D, H, W, C) -> (N, D', H', W', F). The k depth-shifted copies of the (zero-padded) input are
  concatenated along channels, (N D, H, W, k C), and convolved with the kernel reshaped to (kh, kw, kd C,
  F): the same sums as the 3-D convolution. XLA:CPU runs 3-D convolutions far below its 2-D speed (the
  dense-motion mask convolution 7x7x7: about 30 GFLOP/s), this form several times faster; other backends
  gain nothing and lose nothing measurable. Parameters are `nn.Conv`'s ("kernel" (kd, kh, kw, C, F),
  "bias" (F,)) with its initialisers, so checkpoints, converters and initial values are unchanged.
  """
  features: int
  kernel_size: int
  padding: int
  use_bias: bool = True
  dtype: jnp.dtype | None = None
  upsample: bool = False  # convolve the input nearest-upsampled by (1, 2, 2) (`UpBlock3d`)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k, p, f = self.kernel_size, self.padding, self.features
    c = x.shape[-1]
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (k, k, k, c, f), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros_init(), (f,), jnp.float32) if self.use_bias else None
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    b, d, h, w, _ = x.shape
    polyphase = (self.upsample and k == 3 and p == 1  # FLOPs of the upsampled convolution:
                 and 2 * b * d * 4 * h * w * k ** 3 * c * f >= POLYPHASE_MIN_FLOPS)
    if self.upsample and not polyphase:
      x = upsample_nearest(x, (1, 2, 2))
      b, d, h, w, _ = x.shape
    d_out = d + 2 * p - k + 1
    xp = jnp.pad(x, [(0, 0), (p, p), (0, 0), (0, 0), (0, 0)])
    taps = jnp.concatenate([xp[:, i:i + d_out] for i in range(k)], axis=-1) if k > 1 else xp
    taps = taps.reshape(b * d_out, h, w, k * c)  # channel i C + c: depth tap i of input channel c
    kernel_2d = jnp.transpose(kernel, (1, 2, 0, 3, 4)).reshape(k, k, k * c, f)
    if polyphase:
      y = upsampled_conv3x3(taps, kernel_2d)
    else:
      y = _conv2d(taps, kernel_2d, [(p, p), (p, p)])
    y = y.reshape(b, d_out, *y.shape[1:])
    return y if bias is None else y + bias


# The four-phase form (`upsampled_conv3x3`) from this many FLOPs of the upsampled convolution on: it runs
# about 3x faster at LivePortrait's sizes (7-15 GFLOP per up block), but its four convolutions and their
# gradients take XLA longer to compile, and the small presets' up blocks (well under 1 GFLOP) are
# compile-bound in tests and short runs (the test suite took 948 s with it everywhere, 860 s without).
POLYPHASE_MIN_FLOPS = 1e9


def _conv2d(x: jax.Array, kernel: jax.Array, padding) -> jax.Array:
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))


def upsampled_conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """The 3x3 convolution (zero padding 1) of x nearest-upsampled by 2 in H and W, without upsampling:
  output pixel (2y + a, 2x + b) sees low-resolution rows y - 1, y (a = 0) or y, y + 1 (a = 1), so each
  of the four phases (a, b) is a 2x2 convolution of x with kernel taps summed in pairs ([k0, k1 + k2] or
  [k0 + k1, k2] per axis). The same sums as upsampling then convolving, in another order, with 4/9 of
  the multiply-adds and no 4x larger input: the hourglass's up blocks about 3x faster on 2 CPU cores
  (LivePortrait's 128 -> 32 channels at 16 x 64 x 64: 348 -> 121 ms). (N, H, W, C), (3, 3, C, F) ->
  (N, 2H, 2W, F).
  """
  n, h, w, _ = x.shape
  pairs = [lambda t: jnp.stack([t[0], t[1] + t[2]]), lambda t: jnp.stack([t[0] + t[1], t[2]])]
  pads = [(1, 0), (0, 1)]  # the low-resolution offsets of phase 0 (-1, 0) and phase 1 (0, +1)
  rows = []
  for a in range(2):
    rows_a = pairs[a](kernel)  # (2, 3, C, F): the phase's two row taps
    cols = [_conv2d(x, jnp.moveaxis(pairs[b](jnp.moveaxis(rows_a, 1, 0)), 0, 1), [pads[a], pads[b]])
            for b in range(2)]
    rows.append(jnp.stack(cols, axis=3))  # (N, H, W, 2, F)
  return jnp.stack(rows, axis=2).reshape(n, 2 * h, 2 * w, kernel.shape[-1])  # (N, H, 2, W, 2, F)


@jax.custom_vjp
def _depthwise_valid(xp: jax.Array, kernel: jax.Array) -> jax.Array:
  """Valid depthwise convolution of float32 (N, H, W, C) by (k, k, 1, C): k^2 shifted multiply-adds."""
  k = kernel.shape[0]
  h_out, w_out = xp.shape[1] - k + 1, xp.shape[2] - k + 1
  return sum(xp[:, i:i + h_out, j:j + w_out, :] * kernel[i, j, 0] for i in range(k) for j in range(k))


def _grouped_conv(xp: jax.Array, kernel: jax.Array) -> jax.Array:
  return jax.lax.conv_general_dilated(xp, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                      feature_group_count=xp.shape[-1])


def _depthwise_fwd(xp, kernel):
  return _depthwise_valid(xp, kernel), (xp, kernel)


def _depthwise_bwd(residuals, g):
  # The grouped convolution's own gradients: the k^2 slices' gradients (k^2 pads) cost more than they do.
  return jax.vjp(_grouped_conv, *residuals)[1](g)


_depthwise_valid.defvjp(_depthwise_fwd, _depthwise_bwd)


class DepthwiseConv2d(nn.Module):
  """A stride-1 depthwise 2-D convolution (one k x k filter per channel) computed as k^2 shifted
  multiply-adds, accumulated in float32. (N, H, W, C) -> (N, H', W', C).

  The same sums as `nn.Conv(C, (k, k), feature_group_count=C)`, whose grouped convolution XLA:CPU runs
  10-28x slower than this form at ConvNeXt-V2's shapes (7x7 over 64x64x96 ... 8x8x768: 103 ms vs 3.7 ms
  at 64x64x96 on 2 cores); XLA fuses the k^2 terms into one loop on every backend. Gradients are the
  grouped convolution's (cheaper than those of k^2 slices). Parameters are `nn.Conv`'s ("kernel" (k, k,
  1, C), "bias" (C,)) with its initialisers, so checkpoints, converters and initial values are unchanged.
  """
  kernel_size: int
  padding: int
  use_bias: bool = True
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k, p, c = self.kernel_size, self.padding, x.shape[-1]
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (k, k, 1, c), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros_init(), (c,), jnp.float32) if self.use_bias else None
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    xp = jnp.pad(x, [(0, 0), (p, p), (p, p), (0, 0)]).astype(jnp.float32)
    y = _depthwise_valid(xp, kernel.astype(jnp.float32)).astype(x.dtype)
    return y if bias is None else y + bias


def conv(features: int, ndim: int, kernel: int, *, stride: int = 1, padding: int | None = None,
         use_bias: bool = True, name: str | None = None, dtype=None) -> nn.Module:
  """Zero-padded conv with PyTorch's padding (kernel // 2 unless given); stride-1 3-D ones are
  `DepthFoldedConv3d` (the same parameters and sums, faster on CPU)."""
  pad = kernel // 2 if padding is None else padding
  if ndim == 3 and stride == 1:
    return DepthFoldedConv3d(features, kernel, pad, use_bias=use_bias, name=name, dtype=dtype)
  return nn.Conv(features, (kernel,) * ndim, strides=(stride,) * ndim, padding=[(pad, pad)] * ndim,
                 use_bias=use_bias, name=name, dtype=dtype)


def avg_pool(x: jax.Array, window: Sequence[int]) -> jax.Array:
  return nn.avg_pool(x, tuple(window), strides=tuple(window))


class SameBlock2d(nn.Module):
  """conv -> BN -> ReLU (or LeakyReLU 0.01), resolution kept. (N, H, W, C)."""
  features: int
  kernel_size: int = 3
  lrelu: bool = False
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    x = conv(self.features, 2, self.kernel_size, name="conv", dtype=self.dtype)(x)
    x = batch_norm(train, "norm", self.dtype)(x)
    return nn.leaky_relu(x, 0.01) if self.lrelu else nn.relu(x)


class DownBlock2d(nn.Module):
  """conv -> BN -> ReLU -> 2x2 average pool. (N, H, W, C) -> (N, H/2, W/2, F)."""
  features: int
  kernel_size: int = 3
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    x = conv(self.features, 2, self.kernel_size, name="conv", dtype=self.dtype)(x)
    x = nn.relu(batch_norm(train, "norm", self.dtype)(x))
    return avg_pool(x, (2, 2))


class UpBlock2d(nn.Module):
  """nearest x2 -> conv -> BN -> ReLU. (N, H, W, C) -> (N, 2H, 2W, F)."""
  features: int
  kernel_size: int = 3
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    x = upsample_nearest(x, 2)
    x = conv(self.features, 2, self.kernel_size, name="conv", dtype=self.dtype)(x)
    return nn.relu(batch_norm(train, "norm", self.dtype)(x))


class DownBlock3d(nn.Module):
  """conv3d -> BN -> ReLU -> (1, 2, 2) average pool: depth kept, H and W halved.

  (N, D, H, W, C) -> (N, D, H/2, W/2, F).
  """
  features: int
  kernel_size: int = 3
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    x = conv(self.features, 3, self.kernel_size, name="conv", dtype=self.dtype)(x)
    x = nn.relu(batch_norm(train, "norm", self.dtype)(x))
    return avg_pool(x, (1, 2, 2))


class UpBlock3d(nn.Module):
  """nearest (1, 2, 2) -> conv3d -> BN -> ReLU (the first two as one `upsampled_conv3x3` per depth tap
  from `POLYPHASE_MIN_FLOPS` on).
  (N, D, H, W, C) -> (N, D, 2H, 2W, F)."""
  features: int
  kernel_size: int = 3
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    # Large blocks: the upsampling inside the convolution (`upsampled_conv3x3`), 4/9 of the work.
    x = DepthFoldedConv3d(self.features, self.kernel_size, self.kernel_size // 2, upsample=True, name="conv",
                          dtype=self.dtype)(x)
    return nn.relu(batch_norm(train, "norm", self.dtype)(x))


class _ResBlock(nn.Module):
  """Pre-activation residual block: BN -> ReLU -> conv -> BN -> ReLU -> conv, + x."""
  kernel_size: int = 3
  ndim: int = 2
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    c = x.shape[-1]
    h = nn.relu(batch_norm(train, "norm1", self.dtype)(x))
    h = conv(c, self.ndim, self.kernel_size, name="conv1", dtype=self.dtype)(h)
    h = nn.relu(batch_norm(train, "norm2", self.dtype)(h))
    h = conv(c, self.ndim, self.kernel_size, name="conv2", dtype=self.dtype)(h)
    return x + h


class ResBlock2d(_ResBlock):
  """Residual block on (N, H, W, C); channels kept."""
  ndim: int = 2


class ResBlock3d(_ResBlock):
  """Residual block on (N, D, H, W, C); channels kept."""
  ndim: int = 3
