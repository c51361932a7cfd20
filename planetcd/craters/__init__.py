"""Craters: segmentation, catalogs, matching and dating."""
