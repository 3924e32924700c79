"""Terminal Velocity Matching (Zhou, Parger, Haque & Song 2025) as a fewstep plugin
(being built: registers nothing yet)."""
