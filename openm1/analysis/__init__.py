"""Analytic accounting of a configuration: parameters, per-sequence memory, inference FLOPs.

Nothing here allocates a tensor, so the full 456B configuration is as cheap to analyse as ``tiny``.
"""
