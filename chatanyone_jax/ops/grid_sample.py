"""Bilinear / trilinear `grid_sample` with PyTorch semantics, channels-last.

The renderer warps a (B, D, H, W, C) appearance volume with a dense 3-D flow
field once per frame (LivePortrait's warping network, paper Eq. 4), so this is
the hottest op of stage 2. It is written as one gather of all 2^n corners from
a flattened input followed by a weighted sum, which XLA lowers to a single
fused gather + reduction on both CPU and GPU; its VJP w.r.t. the input is a
single scatter-add and w.r.t. the grid flows through the corner weights.

Semantics follow `torch.nn.functional.grid_sample(mode="bilinear",
padding_mode="zeros")`:
  * grid coordinates lie in [-1, 1], last axis ordered (x, y[, z]) indexing
    (W, H[, D]);
  * align_corners=False: ix = ((x + 1) * W - 1) / 2,
    align_corners=True:  ix = (x + 1) / 2 * (W - 1);
  * corners outside the input contribute zero.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp


def _unnormalize(coord: jax.Array, size: int, align_corners: bool) -> jax.Array:
  # Same operation order as ATen's grid_sampler_unnormalize, for bit parity.
  if align_corners:
    return (coord + 1) / 2 * (size - 1)
  return ((coord + 1) * size - 1) / 2


def grid_sample(
    inputs: jax.Array,
    grid: jax.Array,
    *,
    align_corners: bool = False,
) -> jax.Array:
  """Samples `inputs` at `grid` locations with (tri)linear interpolation.

  Args:
    inputs: (N, H, W, C) or (N, D, H, W, C) array.
    grid: (N, Ho, Wo, 2) or (N, Do, Ho, Wo, 3) sampling locations in [-1, 1]
      ordered (x, y[, z]). A grid without the batch axis is broadcast over N.
    align_corners: PyTorch's `align_corners` flag.

  Returns:
    (N, Ho, Wo, C) or (N, Do, Ho, Wo, C), in the dtype of `inputs`.
  """
  nsp = inputs.ndim - 2  # number of spatial dims: 2 or 3
  if nsp not in (2, 3):
    raise ValueError(f"grid_sample expects a 4-D or 5-D input, got shape {inputs.shape}")
  if grid.shape[-1] != nsp:
    raise ValueError(
        f"grid's last axis must be {nsp} for a {inputs.ndim}-D input, got grid shape {grid.shape}")
  if grid.ndim == nsp + 1:  # unbatched grid
    grid = jnp.broadcast_to(grid, (inputs.shape[0],) + grid.shape)
  if grid.ndim != nsp + 2 or grid.shape[0] != inputs.shape[0]:
    raise ValueError(f"grid shape {grid.shape} does not match input shape {inputs.shape}")

  n = inputs.shape[0]
  c = inputs.shape[-1]
  spatial = inputs.shape[1:-1]  # (D,) H, W
  out_spatial = grid.shape[1:-1]
  compute_dtype = jnp.promote_types(grid.dtype, jnp.float32)
  grid = grid.astype(compute_dtype).reshape(n, -1, nsp)  # (N, P, nsp)

  # Grid axis i (x, y, z) indexes the spatial axis counted from the end.
  sizes = spatial[::-1]  # (W, H[, D]) in grid order
  coords = [_unnormalize(grid[..., i], sizes[i], align_corners) for i in range(nsp)]
  lows = [jnp.floor(x) for x in coords]
  fracs = [x - x0 for x, x0 in zip(coords, lows)]
  lows = [x0.astype(jnp.int32) for x0 in lows]

  # Row-major strides of the flattened (D, H, W) volume, in grid order.
  strides = []
  s = 1
  for size in sizes:
    strides.append(s)
    s *= size

  idx_list, w_list = [], []
  for corner in itertools.product((0, 1), repeat=nsp):
    flat = jnp.zeros_like(lows[0])
    weight = jnp.ones_like(fracs[0])
    valid = jnp.ones(lows[0].shape, dtype=bool)
    for i, bit in enumerate(corner):
      pos = lows[i] + bit
      valid &= (pos >= 0) & (pos < sizes[i])
      flat = flat + jnp.clip(pos, 0, sizes[i] - 1) * strides[i]
      weight = weight * (fracs[i] if bit else 1 - fracs[i])
    idx_list.append(flat)
    w_list.append(jnp.where(valid, weight, 0))
  idx = jnp.stack(idx_list, axis=-1)  # (N, P, 2^nsp)
  w = jnp.stack(w_list, axis=-1)  # (N, P, 2^nsp)

  flat_in = inputs.reshape(n, -1, c)  # (N, S, C)
  gathered = jax.vmap(lambda v, i: v[i])(flat_in, idx)  # (N, P, 2^nsp, C)
  out = jnp.einsum("npk,npkc->npc", w.astype(compute_dtype), gathered.astype(compute_dtype))
  return out.reshape((n,) + out_spatial + (c,)).astype(inputs.dtype)
