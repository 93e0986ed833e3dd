"""The grids of the DiffOPF paper by name, including the PJM-API-style variant ``<case>_api``: the case's
loads raised by the largest multiple of 0.05 at which the AC-OPF still converges, so that limits bind."""
from __future__ import annotations

import functools
from dataclasses import replace


from pfbook.power.grids import Grid, load_grid



# ---------------------------------------------------------------------------------------- grids and data
API_SUFFIX = "_api"


@functools.lru_cache(maxsize=8)
def api_load_factor(base: str, step: float = 0.05, limit: float = 4.0) -> float:
    """The largest multiple of ``step`` by which every load of ``base`` can be raised with the AC-OPF still
    converging: at that loading the generator and line limits bind (the PGLib "API" idea, reproduced here)."""
    from pfbook.power.opf import ACOPF

    g = load_grid(base)
    solver = ACOPF(g)
    nominal = solver.solve()
    k, best = 1, 1.0
    while 1.0 + k * step <= limit:
        f = 1.0 + k * step
        res = solver.solve(pd=g.pd * f, qd=g.qd * f, warm_start=nominal)
        if not res.success:
            break
        best, k = f, k + 1
    return round(best, 6)


def diffopf_grid(name: "str | Grid") -> Grid:
    """A grid by name; ``<case>_api`` is ``<case>`` with all loads raised by :func:`api_load_factor`."""
    if isinstance(name, Grid):
        return name
    if isinstance(name, str) and name.endswith(API_SUFFIX):
        base = load_grid(name[: -len(API_SUFFIX)])
        f = api_load_factor(base.name)
        return replace(base, name=name, pd=base.pd * f, qd=base.qd * f, meta={**base.meta, "api_load_factor": f})
    return load_grid(name)
