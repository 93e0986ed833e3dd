"""Many sparse linear systems of one pattern, solved together (NumPy/SciPy, CPU).

:class:`BlockSystem` takes the values of ``b`` square systems that share a sparsity pattern as an array (b, nnz)
and solves them at once: general systems by one sparse LU (SuperLU) of their block-diagonal matrix, symmetric
positive definite ones by a sparse Cholesky factorisation vectorised over the batch (:class:`BatchedCholesky`) in
a fill-reducing order computed once. Used by the sparse power-flow kernel (:mod:`pfbook.power.powerflow`) and
the load flow's sparse backend (:mod:`pfbook.power.loadflow`).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

__all__ = ["CHOLESKY_MIN", "BatchedCholesky", "BlockSystem"]

#: batches of at least this many SPD systems are factored by :class:`BatchedCholesky`, smaller ones by SuperLU
CHOLESKY_MIN = 32


def _csc(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]):
    """CSC layout of one block's distinct entries (row, col): (order, indices, indptr), ``order`` the permutation
    of the entries into CSC order."""
    order = np.lexsort((rows, cols))
    indptr = np.r_[0, np.cumsum(np.bincount(cols, minlength=shape[1]))]
    return order, rows[order], indptr


def _block_diag(vals: np.ndarray, indices: np.ndarray, indptr: np.ndarray, shape: tuple[int, int]) -> sp.csc_matrix:
    """Block-diagonal CSC matrix of ``len(vals)`` blocks sharing one pattern, values (b, nnz) in CSC order."""
    b, nnz = vals.shape
    m, k = shape
    ind = (indices[None, :] + m * np.arange(b)[:, None]).ravel()
    ptr = np.r_[(indptr[None, :-1] + nnz * np.arange(b)[:, None]).ravel(), b * nnz]
    return sp.csc_matrix((vals.ravel(), ind, ptr), shape=(b * m, b * k))


class BatchedCholesky:
    """Sparse Cholesky factorisation L Lᵀ of many SPD matrices of one pattern (already in a fill-reducing order),
    vectorised over the batch: a column loop in Python, each step a NumPy operation on all matrices at once
    (values stored (nnz, b)). Cheaper than a sparse LU per matrix once the batch is a few dozen."""

    def __init__(self, rows: np.ndarray, cols: np.ndarray, m: int):
        low = rows >= cols
        struct = [set() for _ in range(m)]
        for i, j in zip(rows[low & (rows > cols)], cols[low & (rows > cols)]):
            struct[j].add(int(i))
        for j in range(m):  # symbolic factorisation: fill of column j
            if struct[j]:
                p = min(struct[j])
                struct[p] |= struct[j] - {p}
        self.rows = [np.array(sorted(s), dtype=np.int64) for s in struct]
        self.start = np.r_[0, np.cumsum([1 + len(r) for r in self.rows])]
        self.m, self.nnz = m, int(self.start[-1])

        # L's entries column by column, diagonal first: their keys col * m + row are sorted
        keys = np.concatenate([j * m + np.r_[j, r] for j, r in enumerate(self.rows)])
        pos = lambda i, j: np.searchsorted(keys, j * m + i)  # position of L[i, j], i >= j
        self.entries = np.flatnonzero(low)
        self.entry_pos = pos(rows[low], cols[low])
        self.updates = []
        for j in range(m):
            r = self.rows[j]
            a, c = np.tril_indices(len(r))
            self.updates.append((a, c, pos(r[a], r[c])))

    def factor(self, vals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """L's values (nnz_L, b) for values (b, nnz) in the caller's entry order, and which matrices failed
        (a pivot not positive and finite)."""
        L = np.zeros((self.nnz, len(vals)))
        L[self.entry_pos] = vals[:, self.entries].T
        bad = np.zeros(len(vals), dtype=bool)
        for j in range(self.m):
            s, e = self.start[j], self.start[j + 1]
            d = L[s]
            bad |= ~(d > 0) | ~np.isfinite(d)
            d = np.sqrt(np.where(bad, 1.0, d))
            L[s] = d
            if e > s + 1:
                col = L[s + 1 : e]
                col /= d
                a, c, tgt = self.updates[j]
                L[tgt] -= col[a] * col[c]
        return L, bad

    def solve(self, L: np.ndarray, rhs: np.ndarray) -> np.ndarray:
        """x (b, m) with L Lᵀ x = rhs (b, m)."""
        y = np.ascontiguousarray(rhs.T)
        for j in range(self.m):
            s, e = self.start[j], self.start[j + 1]
            y[j] /= L[s]
            if e > s + 1:
                y[self.rows[j]] -= L[s + 1 : e] * y[j]
        for j in range(self.m - 1, -1, -1):
            s, e = self.start[j], self.start[j + 1]
            if e > s + 1:
                y[j] -= (L[s + 1 : e] * y[self.rows[j]]).sum(0)
            y[j] /= L[s]
        return y.T


class BlockSystem:
    """Square systems (m x m) of one sparsity pattern, one per warm start, solved together. Values come in the
    caller's entry order (``rows``, ``cols``). General systems: one sparse LU (SuperLU) of their block-diagonal
    matrix. Symmetric positive definite ones (``spd``): a fill-reducing symmetric ordering computed once here
    (SuperLU's minimum degree on A + Aᵀ), then :class:`BatchedCholesky` for batches of at least
    :data:`CHOLESKY_MIN` (and for the rest, or where a pivot is not positive, SuperLU in that fixed order)."""

    def __init__(self, rows: np.ndarray, cols: np.ndarray, m: int, spd: bool):
        self.m, self.spd = m, spd
        pc = np.arange(m)
        self.opts: dict = {}
        if spd:
            deg = np.bincount(rows, minlength=m)
            one = sp.csc_matrix((np.where(rows == cols, deg[rows] + 1.0, -1.0), (rows, cols)), shape=(m, m))
            pc = spla.splu(
                one, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options=dict(SymmetricMode=True)
            ).perm_c
            self.opts = dict(permc_spec="NATURAL", diag_pivot_thresh=0.01, options=dict(SymmetricMode=True))
            self.chol = BatchedCholesky(pc[rows], pc[cols], m)
        self.pc, self.ip = pc, np.argsort(pc)
        self.order, self.ind, self.ptr = _csc(pc[rows], pc[cols], (m, m))

    def solve(self, vals: np.ndarray, rhs: np.ndarray) -> np.ndarray:
        """Solutions (b, m) for values (b, nnz) and right-hand sides (b, m); rows of singular (or non-finite)
        systems come back NaN."""
        out = np.full(rhs.shape, np.nan)
        idx = np.flatnonzero(np.isfinite(vals).all(1) & np.isfinite(rhs).all(1))
        if self.spd and len(idx) >= CHOLESKY_MIN:
            L, bad = self.chol.factor(vals[idx])
            with np.errstate(all="ignore"):
                x = self.chol.solve(L, rhs[idx][:, self.ip])[:, self.pc]
            out[idx[~bad]] = x[~bad]
            idx = idx[bad]
        if len(idx):
            out[idx] = self._lu(vals[idx], rhs[idx])
        return out

    def _lu(self, vals: np.ndarray, rhs: np.ndarray) -> np.ndarray:
        b, m = rhs.shape
        try:
            lu = spla.splu(_block_diag(vals[:, self.order], self.ind, self.ptr, (m, m)), **self.opts)
            return lu.solve(rhs[:, self.ip].ravel()).reshape(-1, m)[:, self.pc]
        except RuntimeError:  # exactly singular: find the system(s), one at a time
            if b == 1:
                return np.full((1, m), np.nan)
            return np.concatenate([self._lu(vals[i : i + 1], rhs[i : i + 1]) for i in range(b)])
