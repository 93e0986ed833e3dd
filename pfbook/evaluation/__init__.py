"""Evaluation: two-sample distances, chapter summaries and shared figures.

It may use the power-system layer and the diffusion core, never a method.
"""
