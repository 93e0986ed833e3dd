"""pfbook: diffusion models for power-system data, the package behind the book.

Layers (lower never imports higher): power systems (:mod:`pfbook.power.grids`, :mod:`pfbook.power.physics`,
:mod:`pfbook.power.opf`, :mod:`pfbook.power.datasets`), the diffusion core, the methods, evaluation, and the faces
(:mod:`pfbook.book.cli`, :mod:`pfbook.book.rerun`).
"""

__version__ = "0.1.0"

from pfbook.power.grids import Grid, UnknownGridError, known_grids, load_grid  # noqa: E402

__all__ = ["Grid", "UnknownGridError", "known_grids", "load_grid", "__version__"]
