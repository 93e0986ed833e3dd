"""Run profiles and per-chapter configuration objects.

Every chapter takes ``profile`` in its papermill ``parameters`` cell:

* ``ci``      -- the whole notebook in about a minute on 2 CPU cores (what the test suite runs);
* ``default`` -- what the book build runs on a laptop CPU: results that already show the effect;
* ``paper``   -- the paper's own sizes and hyperparameters, meant for a GPU.

A chapter's settings are a :class:`ChapterConfig` built by ``for_profile``; the notebook and the command line
both build it the same way and store it (``to_dict``) next to every result so a run can be reproduced.
"""

from __future__ import annotations

import os
from dataclasses import MISSING, asdict, dataclass, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Mapping

#: The run profiles every chapter understands.
PROFILES: tuple[str, ...] = ("ci", "default", "paper")

#: Environment variable that selects the profile when none is given explicitly (nbmake uses it).
PROFILE_ENV = "PFBOOK_PROFILE"

#: Environment variable that overrides where datasets are stored.
DATA_ENV = "PFBOOK_DATA"


def available_cpus() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one): the default number of
    worker processes for dataset generation and the load-flow solves."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_profile() -> str:
    """The profile named by ``$PFBOOK_PROFILE``, or ``"default"``."""
    return check_profile(os.environ.get(PROFILE_ENV, "default"))


def check_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    return profile


def book_root(start: str | os.PathLike | None = None) -> Path | None:
    """The folder holding ``_toc.yml``, searched from ``start`` (default: the working folder) upward."""
    here = Path(start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / "_toc.yml").is_file():
            return d
    return None


def published_results() -> Path:
    """The book's published results, ``book/results/<grid>/``: chapter summaries of batch runs over grids."""
    root = book_root()
    return (root / "book" / "results") if root is not None else Path("results")


def data_dir() -> Path:
    """Where datasets live: ``$PFBOOK_DATA``, else the book's ``data/`` folder, else ``./data``.

    Chapters run in ``book/`` and the command line at the repository root; both find the same folder.
    """
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV])
    root = book_root()
    return (root / "data") if root is not None else Path("data")


def apply_overrides(cfg, overrides: "Mapping[str, Any] | None"):
    """``cfg`` (a chapter's settings dataclass) with the settings named in ``overrides`` replaced.

    This is how a chapter's papermill parameter ``overrides`` (and ``pfbook rerun --set KEY=VALUE``) changes single
    settings of a profile, e.g. ``{"n_test": 100, "n_draw": 250}``. A setting of a nested settings object is named
    by a dotted key, ``{"train.steps": 4000}``, or given as a dict, ``{"train": {"steps": 4000}}``. Values are
    checked against the setting's current type (an int where an int is, a tuple from a list); an unknown setting
    is an error that lists the known ones.
    """
    if not overrides:
        return cfg
    if not is_dataclass(cfg):
        raise TypeError(f"overrides apply to a settings dataclass, not {type(cfg).__name__}")
    if not isinstance(overrides, Mapping):
        raise TypeError(f"overrides must be a dict of setting -> value; got {type(overrides).__name__}")
    return _apply(cfg, _nest(overrides), "")


def _nest(overrides: Mapping[str, Any]) -> dict:
    """``{"train.steps": 1, "train": {"lr": 2}}`` -> ``{"train": {"steps": 1, "lr": 2}}``."""
    out: dict = {}
    for key, value in overrides.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"a setting is named by a non-empty string, got {key!r}")
        head, _, rest = key.partition(".")
        if rest:
            value = {rest: value}
        if isinstance(value, Mapping) and isinstance(out.get(head), Mapping):
            out[head] = {**out[head], **value}
        else:
            out[head] = value
    return out


def _apply(cfg, overrides: Mapping[str, Any], prefix: str):
    known = {f.name for f in fields(cfg)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(
            f"{type(cfg).__name__} has no setting {', '.join(repr(prefix + u) for u in unknown)}; "
            f"its settings are: {', '.join(prefix + k for k in sorted(known))}"
        )
    linked = set(getattr(cfg, "LINKED", ()))
    changes = {}
    for name, value in overrides.items():
        current = getattr(cfg, name)
        if is_dataclass(current) and not isinstance(current, type):
            if not isinstance(value, Mapping):
                raise ValueError(
                    f"setting {prefix + name!r} holds settings of its own; change one of them with a "
                    f"dotted key, e.g. {prefix + name}.{fields(current)[0].name}=..., not {value!r}"
                )
            nested = _nest(value)
            for k in sorted(set(nested) & linked & {f.name for f in fields(cfg)}):
                raise ValueError(f"setting {prefix}{name}.{k} follows the chapter's {k!r}; set {k!r} instead")
            changes[name] = _apply(current, nested, f"{prefix}{name}.") if nested else current
        else:
            changes[name] = _coerce(prefix + name, value, current)
    return replace(cfg, **changes)


def _coerce(name: str, value, current):
    """``value`` converted to the type of ``current`` where that is safe, else a ValueError naming the setting."""
    if current is None or value is None:
        return value
    if isinstance(current, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(current, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif isinstance(current, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(current, str):
        if isinstance(value, str):
            return value
    elif isinstance(current, tuple):
        if isinstance(value, (list, tuple)):
            return tuple(value)
    else:
        return value
    raise ValueError(f"setting {name!r} expects a {type(current).__name__} (now {current!r}); got {value!r}")


# ---------------------------------------------------------------------------------------- the chapters' settings
@dataclass(frozen=True)
class ChapterConfig:
    """Base of every chapter's settings: a frozen dataclass whose profiles are data.

    A subclass declares its fields with the ``default`` profile's values and the other profiles as a table of
    changes, :attr:`PROFILES` (``{"ci": {...}, "default": {}, "paper": {...}}``; a nested setting by a dotted key,
    ``"train.steps"``, as :func:`apply_overrides` reads them). :meth:`for_profile` builds one:

    1. the dataclass with the given fields (the grid or system, seed, device);
    2. :meth:`special_cases` -- changes that depend on those fields (a large grid, a PMU system), none by default;
    3. the profile's row of :attr:`PROFILES`.

    A field that is itself a settings dataclass (the training settings, ``train``) is nested: :meth:`to_dict`
    writes it as a dict, and its fields named in :attr:`LINKED` (``seed``, ``device``) always equal the chapter's
    own, copied in when the settings are built, so one seed and one device rule the whole chapter.
    """

    #: changes from the field defaults, per profile (data; the ``default`` profile is the defaults themselves)
    PROFILES: ClassVar[Mapping[str, Mapping[str, Any]]] = {"ci": {}, "default": {}, "paper": {}}
    #: the field that :meth:`for_profile`'s second positional argument sets
    WHERE: ClassVar[str] = "grid"
    #: fields of a nested settings object that follow the chapter's field of the same name
    LINKED: ClassVar[tuple[str, ...]] = ("seed", "device")

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if is_dataclass(value) and not isinstance(value, type):
                same = {
                    k: getattr(self, k)
                    for k in self.LINKED
                    if hasattr(self, k) and k in {g.name for g in fields(value)}
                }
                if any(getattr(value, k) != v for k, v in same.items()):
                    object.__setattr__(self, f.name, replace(value, **same))

    @classmethod
    def special_cases(cls, profile: str, cfg: "ChapterConfig") -> dict[str, Any]:
        """Changes that depend on the fields :meth:`for_profile` was given (applied before the profile's table)."""
        return {}

    @classmethod
    def for_profile(cls, profile: str, where: "str | None" = None, /, **fields_):
        """The settings of ``profile``; ``where`` (or ``grid=`` / ``system=``) names what the chapter runs on."""
        check_profile(profile)
        if where is not None:
            if cls.WHERE in fields_:
                raise TypeError(f"{cls.__name__}.for_profile got {cls.WHERE!r} twice (positionally and by name)")
            fields_[cls.WHERE] = where
        cfg = cls(**fields_)
        cfg = apply_overrides(cfg, cls.special_cases(profile, cfg))
        return apply_overrides(cfg, cls.PROFILES.get(profile, {}))

    def setting(self, name: str) -> Any:
        """The value of a setting by its (dotted) name, ``"n_samples"`` or ``"train.steps"`` (or a derived property)."""
        value: Any = self
        for part in name.split("."):
            if part.startswith("_") or not hasattr(value, part) or callable(getattr(value, part)):
                raise KeyError(f"{type(self).__name__} has no setting {name!r}")
            value = getattr(value, part)
        return value

    def to_dict(self) -> dict:
        """Every setting, nested settings as dicts (what a summary stores as its ``config``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]):
        """Settings written by :meth:`to_dict`, or by the older flat layout (the training settings beside the
        others, before they were nested): lists become tuples where the field holds a tuple; settings that no
        longer exist are dropped."""
        return _from_dict(cls, d)


def _from_dict(cls, d: Mapping[str, Any]):
    import typing

    hints = typing.get_type_hints(cls)
    kwargs, used = {}, set()
    for f in fields(cls):
        kind = hints.get(f.name)
        sub = kind if isinstance(kind, type) and is_dataclass(kind) else None
        if sub is not None:
            if isinstance(d.get(f.name), Mapping):
                kwargs[f.name] = _from_dict(sub, d[f.name])
            else:  # the flat layout: the nested fields among the chapter's
                flat = {g.name: d[g.name] for g in fields(sub) if g.name in d}
                base = f.default_factory() if f.default_factory is not MISSING else sub()
                kwargs[f.name] = replace(base, **{k: _tuple_like(getattr(base, k), v) for k, v in flat.items()})
            used.add(f.name)
        elif f.name in d:
            default = (
                f.default
                if f.default is not MISSING
                else (f.default_factory() if f.default_factory is not MISSING else None)
            )
            kwargs[f.name] = _tuple_like(default, d[f.name])
    return cls(**kwargs)


def _tuple_like(default, value):
    return tuple(value) if isinstance(default, tuple) and isinstance(value, list) else value
