"""Trace-time checks of the fused losses' inputs: a classifier head, label lists, chunks.

The checks shared with the other losses (dtypes, reductions, class weights)
are in :mod:`jaxmargin._validation`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxmargin import _validation as v


def classifier_inputs(fn: str, features, kernel, bias):
  """Checked ``features (N, D)``, ``kernel (D, C)``, ``bias (C,)``, cast to the compute dtype.

  Returns the three arrays (``bias`` may be ``None``) and the output dtype.
  """
  h = v.as_float_array(fn, "features", features)
  w = v.as_float_array(fn, "kernel", kernel)
  if h.ndim != 2:
    raise ValueError(f"{fn}: features shape {h.shape} is not 2-D; expected (N, D)")
  if w.ndim != 2 or w.shape[0] != h.shape[1]:
    raise ValueError(
      f"{fn}: kernel shape {w.shape} does not fit features shape "
      f"{h.shape}; expected ({h.shape[1]}, C), one column per class"
    )
  if w.shape[1] == 0:
    raise ValueError(f"{fn}: kernel shape {w.shape} has no class; expected C >= 1")
  arrays = [h, w]
  if bias is not None:
    b = v.as_float_array(fn, "bias", bias)
    if b.shape != (w.shape[1],):
      raise ValueError(
        f"{fn}: bias shape {b.shape} does not match the {w.shape[1]} "
        f"classes of kernel; expected ({w.shape[1]},)"
      )
    arrays.append(b)
  out_dtype = jnp.result_type(*arrays)
  dtype = v.compute_dtype(out_dtype)
  b = None if bias is None else arrays[2].astype(dtype)
  return h.astype(dtype), w.astype(dtype), b, out_dtype


def check_chunk_size(fn: str, chunk_size) -> int:
  """Checks a static ``chunk_size``: a positive int."""
  if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
    raise TypeError(f"{fn}: chunk_size is {chunk_size!r}; expected a positive int or None")
  if chunk_size <= 0:
    raise ValueError(f"{fn}: chunk_size is {chunk_size}; expected a positive int or None")
  return chunk_size


def check_num_classes(fn: str, num_classes, columns: int) -> int:
  """Checks a static ``num_classes`` against the kernel's ``columns``; ``None``: all."""
  if num_classes is None:
    return columns
  if isinstance(num_classes, bool) or not isinstance(num_classes, int):
    raise TypeError(f"{fn}: num_classes is {num_classes!r}; expected an int or None")
  if not 1 <= num_classes <= columns:
    raise ValueError(
      f"{fn}: num_classes is {num_classes}; expected 1 <= num_classes <= "
      f"{columns}, the columns of kernel"
    )
  return num_classes


def label_list_array(fn: str, labels, num_rows: int) -> jax.Array:
  """Checks ``(N, K)`` integer label lists for ``num_rows`` rows."""
  y = v.as_index_array(fn, "labels", labels)
  if y.ndim != 2 or y.shape[0] != num_rows:
    raise ValueError(
      f"{fn}: labels shape {y.shape} is not a label list for the "
      f"{num_rows} rows of features; expected ({num_rows}, K): class "
      "indices padded with -1"
    )
  return y
