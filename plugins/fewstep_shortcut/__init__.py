"""Shortcut models (Frans et al. 2024) as a fewstep plugin (being built: registers nothing yet)."""
