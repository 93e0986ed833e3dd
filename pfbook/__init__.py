"""pfbook: diffusion models for power-system data, the package behind the book.

Layers (lower never imports higher): power systems (:mod:`pfbook.grids`, :mod:`pfbook.physics`,
:mod:`pfbook.opf`, :mod:`pfbook.datasets`), the diffusion core, the methods, evaluation, and the faces
(:mod:`pfbook.cli`, :mod:`pfbook.rerun`).
"""
__version__ = "0.1.0"

from .grids import Grid, UnknownGridError, known_grids, load_grid  # noqa: E402

__all__ = ["Grid", "UnknownGridError", "known_grids", "load_grid", "__version__"]
