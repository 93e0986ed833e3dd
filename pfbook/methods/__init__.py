"""The four papers' methods, each a package with its baselines beside it.

Each composes the power-system layer, the diffusion core and evaluation; no method imports another.
"""
