"""The cell registry: ``register`` a cell class by name, ``build`` a layer of it, ``names``/``describe``.

Registration happens on ``import cells`` (every family file is imported by ``cells/__init__.py``), as in timm.
"""
from __future__ import annotations

import difflib
import inspect
import textwrap

from .base import formula_expression

_CELLS: dict[str, type] = {}


def register(name: str):
    """Class decorator: ``@register("lstm1")`` makes the cell buildable as ``cells.build("lstm1", ...)``.

    The cell's ``formula`` must read as arithmetic in m and n (``count`` evaluates it), checked here, at import;
    ``has_forget_bias`` is set to what ``forget_bias_ok()`` says (for the LSTM family that follows from ``terms``)."""

    def wrap(cls):
        if name in _CELLS:
            raise ValueError(f"cell {name!r} is already registered (by {_CELLS[name].__qualname__})")
        try:
            formula_expression(cls.formula)
        except ValueError as e:
            raise ValueError(f"cell {name!r} ({cls.__qualname__}): {e}; write its parameter count in the "
                             f"notation of docs/cells.md as the class attribute formula") from None
        cls.name = name
        cls.has_forget_bias = cls.forget_bias_ok()
        _CELLS[name] = cls
        return cls

    return wrap


def unregister(name: str) -> None:
    """Remove cell ``name`` (a test undoing its own ``register``); an unknown name raises as ``get`` does."""
    get(name)
    del _CELLS[name]


def names() -> list[str]:
    """All registered cell names, sorted."""
    return sorted(_CELLS)


def get(name: str) -> type:
    """The cell class registered as ``name``; an unknown name lists the valid ones and the closest."""
    try:
        return _CELLS[name]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(name), names(), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown cell {name!r}.{hint} Valid cells: {', '.join(names())}") from None


def build(name: str, input_size: int, hidden_size: int, *, num_layers: int = 1, bidirectional: bool = False,
          dropout: float = 0.0, backend: str = "auto", weight_drop: float = 0.0, **options):
    """A batch-first recurrent layer of cell ``name``: see ``cells.layer.Recurrent`` for the call signature."""
    from .layer import Recurrent

    return Recurrent(get(name), input_size, hidden_size, num_layers=num_layers, bidirectional=bidirectional,
                     dropout=dropout, backend=backend, weight_drop=weight_drop, **options)


def describe(name: str) -> str:
    """The cell's equations, parameter formula, paper and exact backends, as text."""
    cls = get(name)
    doc = textwrap.dedent(inspect.getdoc(cls) or "").strip()
    opts = ", ".join(f"{k}={v!r}" for k, v in cls.options.items()) or "none"
    lines = [
        f"{name}  ({cls.paper_title()})",
        "",
        doc,
        "",
        f"parameters: {cls.formula}   (m = input size, n = hidden size; one bias per gate)",
        f"  e.g. m=n=128: {cls.count(128, 128):,}",
        f"cell options: {opts}",
        f"exact backends: {', '.join(cls.exact_backends())}",
    ]
    if cls.fused_when:
        lines.append(f"  cudnn only when: {cls.fused_when}")
    return "\n".join(lines)
