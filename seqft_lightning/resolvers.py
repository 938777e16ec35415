"""OmegaConf resolvers the configs use (registered on import of the package)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import ListConfig, OmegaConf


def project_root() -> str:
    """The repository holding ``conf/`` and ``data/`` (editable install), else the working dir."""
    candidate = Path(__file__).resolve().parents[1]
    return str(candidate if (candidate / "conf").is_dir() else Path.cwd())


def singletons(classes) -> ListConfig:
    """``[3, 7]`` -> ``[[3], [7]]``: one stage per class (e.g. classes to forget), a ListConfig (see :func:`grid`)."""
    return ListConfig([[int(c)] for c in classes])


def grid(start: float, stop: float, step: float) -> ListConfig:
    """``start, start+step, ..., stop`` (stop included), rounded to 9 decimals: e.g. a lambda grid.
    A ListConfig, not a list: ``--cfg job --resolve`` prints a resolved config only of config nodes."""
    start, stop, step = float(start), float(stop), float(step)
    if step <= 0 or stop < start:
        raise ValueError(f"grid({start}, {stop}, {step}) needs step > 0 and stop >= start")
    return ListConfig([round(start + i * step, 9) for i in range(int(round((stop - start) / step)) + 1)])


_GLOB_SAFE = str.maketrans({"[": "(", "]": ")", "*": "x", "?": "_", "/": "_", " ": "", "'": "", '"': ""})


def short_number(value: str, digits: int = 6) -> str:
    """``0.000703573702872`` -> ``0.000703574`` (``digits`` significant digits); anything that is not a float
    with more digits, as given."""
    try:
        number = float(value)
    except ValueError:
        return value
    short = f"{number:.{digits}g}"
    return short if len(short) < len(value) and not number.is_integer() else value


def job_dirname(overrides, max_len: int = 200) -> str:
    """A sweep job's folder name from its command-line overrides (``hydra.overrides.task``): only those
    that affect results, sorted, so a rerun with other paths, loggers or ``resume`` finds the same folder;
    glob-safe (``[`` ``]`` become ``(`` ``)``); numbers to 6 significant digits. A name that was rounded or
    is longer than ``max_len`` ends in a hash of the full name, so two configs never share a folder."""
    import hashlib

    from seqft_lightning.contract import result_overrides

    kept = sorted(result_overrides(list(overrides)))  # as Hydra sorts override_dirname
    full = ",".join(kept).translate(_GLOB_SAFE) or "default"
    parts = [f"{k}={short_number(v)}" if sep else k for k, sep, v in (o.partition("=") for o in kept)]
    name = ",".join(parts).translate(_GLOB_SAFE) or "default"
    suffix = f"-{hashlib.sha256(full.encode()).hexdigest()[:16]}"
    if len(name) > max_len:
        return f"{name[: max_len - len(suffix)]}{suffix}"
    return name if name == full else f"{name}{suffix}"


def register() -> None:
    for name, fn in {"project_root": project_root, "singletons": singletons, "grid": grid, "job_dirname": job_dirname}.items():
        OmegaConf.register_new_resolver(name, fn, replace=True)
