"""Compose a run's config with Hydra: ``conf/config.yaml`` + experiment + preset + the experiment's own preset changes
+ the user's overrides, in that order (last wins).

An experiment file says what each preset changes for its table under ``presets.<preset>``; those keys are turned into
Hydra overrides placed before the user's, so ``python reproduce/table2_simplified.py --preset quick
trainer.max_epochs=2`` runs 2 epochs whatever ``quick`` says. ``presets.<preset>.groups: {optim: adam}`` swaps a
whole config group (``optim=adam``) before the other changes apply.
"""
from __future__ import annotations

import contextlib
import difflib
import json
import re
import sys
from pathlib import Path

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

CONF = Path(__file__).resolve().parents[1] / "conf"
PRESETS = ("paper", "quick", "smoke")


class ConfigError(ValueError):
    """A config the user asked for cannot be composed: an unknown preset, experiment, group option or key."""


def default_preset(launcher: str | None = None) -> str:
    """``paper`` where a GPU is visible (or the runs go to SLURM), else ``quick``: the same for the table scripts
    and ``python -m reproduce.train``."""
    import torch

    return "paper" if torch.cuda.is_available() or launcher == "slurm" else "quick"


@contextlib.contextmanager
def errors_as_messages(prog: str, errors: tuple[type[BaseException], ...], status: int):
    """``errors`` end the command with their message alone and exit ``status``: no traceback for what the user can
    fix from the message."""
    try:
        yield
    except errors as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        raise SystemExit(status) from None


def usage_errors(prog: str):
    """A user's mistake in what is asked for (a ``ValueError`` while composing and checking the config: an unknown
    key, cell, task kind or option, each listing the valid ones): its message alone and exit status 2, as argparse
    does for a bad flag."""
    return errors_as_messages(prog, (ValueError,), 2)


def experiments() -> list[str]:
    return sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def _leaves(node, prefix: str = ""):
    """(dotted key, value) of every leaf of a nested dict; lists are leaves, and so is a dict with a key that Hydra's
    override grammar cannot name (``5M``: it starts with a digit), which is then set whole."""
    if isinstance(node, dict) and node and all(re.fullmatch(r"[A-Za-z_][\w-]*", str(k)) for k in node):
        for k, v in node.items():
            yield from _leaves(v, f"{prefix}.{k}" if prefix else str(k))
    else:
        yield prefix, node


def _hydra_value(value) -> str:
    """A value in Hydra's override grammar: JSON, except that dict keys are bare (``{name:"5M",task.name:"ptb"}``)."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_hydra_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_hydra_value(v) for v in value) + "]"
    return json.dumps(value)  # numbers, quoted strings, true/false, null


def override(key: str, value) -> str:
    """The override that sets ``key`` to ``value`` (any YAML value), whether the key exists or not."""
    return f"++{key}={_hydra_value(value)}"


def _explain(err: Exception, overrides: list[str], base: DictConfig | None) -> str:
    """For an unknown key: ours first (the close match, the valid keys at its level), then Hydra's message only
    where its advice applies (no close match: "+key=value" appends a new key); else Hydra's message."""
    msg, ours, close_any = str(err), [], False
    if base is None:
        return msg
    for o in overrides:
        key = o.lstrip("+~").split("=", 1)[0]
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(base, parent) if parent else base
        if isinstance(node, DictConfig) and leaf not in node:
            valid = sorted(str(k) for k in node.keys())
            close = difflib.get_close_matches(leaf, valid, n=1)
            close_any = close_any or bool(close)
            ours.append(f"unknown config key {key!r}" + (f" (did you mean {parent + '.' if parent else ''}{close[0]}?)"
                                                         if close else "")
                        + f"; valid keys under {parent or 'the root'}: {', '.join(valid)}")
    if not ours:
        return msg
    return "\n".join(ours + ([] if close_any else [f"({msg})"]))


def compose(experiment: str | None = None, preset: str = "quick", overrides: list[str] = ()) -> DictConfig:
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    if experiment is not None and experiment not in experiments():
        raise ConfigError(f"unknown experiment {experiment!r}; valid: {', '.join(experiments())}")
    head = ([f"experiment={experiment}"] if experiment else []) + [f"preset={preset}"]
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        base = hydra_compose("config", overrides=head)
        node = base.presets.get(preset)
        changes = OmegaConf.to_container(node, resolve=False) if node is not None else {}
        # `groups: {optim: adam}` picks another option of a config group (a whole file, not a merge into the old one)
        extra = [f"{group}={option}" for group, option in (changes.pop("groups", None) or {}).items()]
        extra += [override(k, v) for k, v in _leaves(changes)]
        try:
            cfg = hydra_compose("config", overrides=head + extra + list(overrides))
        except (HydraException, OmegaConfBaseException) as e:
            # the valid keys are those of the config the user's group choices (task=ptb, optim=adam) make
            groups = [o for o in overrides if "." not in o.split("=", 1)[0] and "=" in o]
            try:
                chosen = hydra_compose("config", overrides=head + extra + groups)
            except (HydraException, OmegaConfBaseException):
                chosen = base
            raise ConfigError(_explain(e, list(overrides), chosen)) from None
    return cfg
