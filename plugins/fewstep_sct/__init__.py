"""sCT, continuous-time consistency training (Lu & Song 2024) as a fewstep plugin
(being built: registers nothing yet)."""
