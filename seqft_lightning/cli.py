"""Entry-point glue: turn user errors into one line and a nonzero exit."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Callable, TypeVar

from seqft_lightning.contract import ERROR_FILE, RETIRED_KEYS
from seqft_lightning.errors import EXIT_USER_ERROR, SeqftError
from seqft_lightning.io import atomic_write_json

log = logging.getLogger("seqft_lightning")

T = TypeVar("T")

CONSOLE = "console"  # LogRecord attribute: False keeps a record off the console handler


def in_sweep() -> bool:
    """True inside a job of ``train.py -m`` (Hydra's MULTIRUN mode)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


class ConsoleFilter(logging.Filter):
    """What reaches the console handler (``train.log`` gets everything): never the records logged with
    ``extra={"console": False}``; inside a sweep only warnings and errors (a sweep shows one line per job)."""

    def __init__(self) -> None:
        super().__init__()
        self.min_level = logging.WARNING if in_sweep() else logging.NOTSET

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, CONSOLE, True) and record.levelno >= self.min_level


def run_or_exit(fn: Callable[[], T], job_dir: str | Path | None = None) -> T | None:
    """Call ``fn``; on a :class:`SeqftError` log ``error: <message>`` and exit with status 2. Inside a
    sweep job (``job_dir`` given) a refusal does not end the sweep: the error goes to the job's
    ``train.log`` and ``error.json``, the other jobs run, the sweep ends with status 2; returns ``None``."""
    if job_dir is not None:
        (Path(job_dir) / ERROR_FILE).unlink(missing_ok=True)  # an earlier attempt's refusal
    try:
        return fn()
    except SeqftError as err:
        message = " ".join(str(err).split())  # one line, whatever the cause's text held
        # The log record (kept off the console by ConsoleFilter) for the run's train.log.
        log.error("error: %s", message, extra={CONSOLE: False})
        if job_dir is not None:
            atomic_write_json(Path(job_dir) / ERROR_FILE, {"error": message, "exit_status": EXIT_USER_ERROR})
            return None
        sys.stderr.write(f"error: {message}\n")  # the bare line on stderr for the user
        sys.exit(EXIT_USER_ERROR)


def misspelt_key(args: list[str], config_dir: str, config_name: str = "train") -> str | None:
    """One line naming the first command-line override whose key the composed config lacks, with the closest
    valid key and the node's valid keys, or a retired key with what replaced it; ``None`` when every key exists
    or the line does not parse (Hydra's own refusal exits 1 with a hint to add the key with ``+``). Adding a key
    with ``+`` is accepted only where something takes it: an argument of the class or function the node
    instantiates (``+trainer.check_val_every_n_epoch=2``), unless it is a near-typo of one of the node's settings
    (``+retention.lamda``); the run refuses an argument the class does not take, in one line (importing the class
    here would load torch before the run pins its kernels). Nothing reads a new key of a plain node."""
    import difflib

    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import DictConfig, OmegaConf

    try:
        parsed = OverridesParser.create().parse_overrides([a for a in args if "=" in a and not a.startswith("-")])
    except Exception:
        return None
    keyed = [o for o in parsed if "." in o.key_or_group and not o.key_or_group.startswith("hydra") and not o.is_delete()]
    groups = [o for o in parsed if "." not in o.key_or_group and "/" not in o.key_or_group and not o.is_delete()]
    added = [o for o in groups if o.is_add() and not (Path(config_dir) / o.key_or_group).is_dir()]  # not a group
    if not keyed and not added:
        return None
    first = [f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()), '') if o.is_sweep_override() else o.get_value_element_as_str()}"
             for o in groups]
    try:
        with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=first, return_hydra_config=True)
        choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
    except Exception:
        return None
    if added:
        top = [k for k in cfg if k not in {"hydra", *(o.key_or_group for o in added)}]
        return f"{added[0].key_or_group} is not a setting: the top-level settings are {', '.join(top)}"
    for override in keyed:
        key = override.key_or_group
        if key in RETIRED_KEYS:
            return f"{key} is gone: {RETIRED_KEYS[key]}"
        parent_key, _, leaf = key.rpartition(".")
        parent = OmegaConf.select(cfg, parent_key, default=None)
        if not isinstance(parent, DictConfig):
            continue  # a missing group node: Hydra's own message names it
        keys = [k for k in parent if not str(k).startswith("_")]
        if leaf in parent or (override.is_add() and "_target_" in parent
                              and not difflib.get_close_matches(leaf, keys, n=1, cutoff=0.8)):
            continue  # an argument added to what the node instantiates (unless a near-typo of a setting it has)
        close = difflib.get_close_matches(leaf, keys, n=1, cutoff=0.5)
        where = f"{parent_key}={choices[parent_key]}" if choices.get(parent_key) else parent_key
        hint = f"did you mean {parent_key}.{close[0]}? " if close else ""
        return (f"{key.lstrip('+')} is not a setting of {where}: {hint}its settings are "
                f"{', '.join(f'{parent_key}.{k}' for k in keys)}")
    return None
