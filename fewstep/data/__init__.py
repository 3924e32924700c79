"""Datasets: toy 2D sets (this package), images and latents (later). See :mod:`fewstep.data.base`."""
