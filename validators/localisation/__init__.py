"""Per-layer localisation: where an artifact's values first leave the hub's.

`graph` (what tracers report), `align` (which hub tensor each artifact tensor holds), `profile`
(per-layer metrics, fused groups, the first divergent layer), `stage` (the child that runs it all).
Framework-free except through the tracers, which live beside their runners.
"""
