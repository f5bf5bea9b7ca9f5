"""Synthetic twins (issue 4): the only package that imports sdv and sdmetrics."""
