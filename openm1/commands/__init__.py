"""One module per CLI verb; see :mod:`openm1.cli`."""
