"""Deployment formats beyond jpq's own bundle.

* :mod:`jpq_jax.deploy.onnx_export`: a bundle as a standard ONNX model (QuantizeLinear /
  DequantizeLinear, narrow integer weight types) or as QONNX (``Quant`` nodes with exact
  bit-widths); needs the optional extra ``pip install 'jpq-jax[onnx]'``.
* :mod:`jpq_jax.deploy.fixed_point`: integer-only requantization of a bundle (fixed-point
  multipliers and shifts instead of float32 rescaling), for MCU targets.

Both start from a :class:`jpq_jax.export.Bundle`, so they see exactly the network the bundle holds:
pruned channels removed, integer codes, the searched clips and bit-widths.
"""
