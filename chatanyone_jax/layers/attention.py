"""Multi-head self- and cross-attention on (B, T, D) tokens.

The core is `jax.nn.dot_product_attention`, which picks cuDNN's fused kernel
on GPU (`implementation=None`) and plain XLA elsewhere.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class MultiHeadAttention(nn.Module):
  """Multi-head attention; self-attention when `context` is None.

  Attributes:
    num_heads: number of heads; the model width must divide by it.
    qkv_bias: bias on the q/k/v projections.
    zero_init_out: zero-initialise the output projection (residual branches
      that must start as the identity).
  """
  num_heads: int
  qkv_bias: bool = True
  zero_init_out: bool = False
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array, context: jax.Array | None = None,
               mask: jax.Array | None = None) -> jax.Array:
    """Attends from x to context.

    Args:
      x: (B, Tq, D) queries.
      context: (B, Tk, Dc) keys/values; x itself when None.
      mask: boolean, True = attend; (B, Tk) key padding mask, or anything
        broadcastable to (B, num_heads, Tq, Tk). Every query needs at least
        one visible key.

    Returns:
      (B, Tq, D).
    """
    d = x.shape[-1]
    if d % self.num_heads:
      raise ValueError(f"width {d} is not divisible by {self.num_heads} heads")
    head_dim = d // self.num_heads
    ctx = x if context is None else context
    dense = lambda name: nn.DenseGeneral((self.num_heads, head_dim), use_bias=self.qkv_bias,
                                         name=name, dtype=self.dtype)
    q = dense("query")(x)  # (B, Tq, N, H)
    k = dense("key")(ctx)  # (B, Tk, N, H)
    v = dense("value")(ctx)
    if mask is not None:
      mask = jnp.asarray(mask, bool)
      if mask.ndim == 2:  # (B, Tk) key padding
        mask = mask[:, None, None, :]
      mask = jnp.broadcast_to(mask, (x.shape[0], self.num_heads, x.shape[1], ctx.shape[1]))
    out = jax.nn.dot_product_attention(q, k, v, mask=mask)  # (B, Tq, N, H)
    init = nn.initializers.zeros if self.zero_init_out else nn.initializers.lecun_normal()
    return nn.DenseGeneral(d, axis=(-2, -1), kernel_init=init, name="out", dtype=self.dtype)(out)
