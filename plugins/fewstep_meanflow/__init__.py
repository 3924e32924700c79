"""MeanFlow (Geng et al. 2025) as a fewstep plugin (being built: registers nothing yet)."""
