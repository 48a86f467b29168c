"""Extension points by name: the schedules, masking kinds and samplers a config may name.

A registry maps a name to one class. The built-in classes register themselves where they are defined
(core/schedules.py, core/masking.py); a user's module registers its own the same way, with the
decorator, before the config is validated. Config validation, the CLI's choices and the build
functions all read the registry, so a class registered at runtime is accepted everywhere.

This module imports neither torch nor the modules that define the classes: config validation and
`mdlm-tui --help` must stay fast, so each registry knows its built-in names (and the module that holds
them) before that module is imported; looking a built-in up is done by code that imported it already.
"""

from __future__ import annotations

import difflib
import importlib
import os
from typing import Generic, TypeVar

from core.errors import UserError

T = TypeVar("T")


class UnknownName(UserError, ValueError):
    """A name no class is registered under; a UserError for front ends, a ValueError for callers."""


class Registry(Generic[T]):
    """Classes of one kind by name. `builtin` names are reserved for the module `home`, which registers
    them when imported; they are known (to config validation, the CLI) before it is."""

    def __init__(
        self,
        what: str,
        key: str | None = None,
        home: str | None = None,
        builtin: tuple[str, ...] = (),
        traits: dict[str, dict] | None = None,
    ):
        self.what, self.key, self.home, self.builtin = what, key, home, tuple(builtin)
        self._classes: dict[str, T] = {}
        # Class attributes of built-ins that torch-free readers (the TUI's forms) need before `home` is
        # imported; tests pin that the classes agree.
        self._traits = traits or {}

    def register(self, name_or_cls, cls: T | None = None):
        """File a class under a name: `register(cls)` (a class decorator; the name is `cls.name`) or
        `register(name, cls)`. A name is registered once; a second registration is refused."""
        if cls is None:
            cls, name = name_or_cls, getattr(name_or_cls, "name", None)
        else:
            name = name_or_cls
        shown = getattr(cls, "__qualname__", repr(cls))
        if not isinstance(name, str) or not name.strip() or name != name.strip():
            raise UserError(f"{shown} needs a name (a non-empty string) to be registered as a {self.what}.")
        if name in self._classes or (name in self.builtin and getattr(cls, "__module__", None) != self.home):
            raise UserError(
                f"A {self.what} named '{name}' is already registered ({self._origin(name)}); "
                f"register {shown} under another name."
            )
        self._classes[name] = cls
        return cls

    def unregister(self, name: str) -> None:
        """Forget a name registered at runtime (a test's, a notebook's); the built-ins stay."""
        if name not in self.builtin:
            self._classes.pop(name, None)

    def names(self) -> tuple[str, ...]:
        """Every name a config may use: the built-ins, then those registered at runtime, in order."""
        return self.builtin + tuple(name for name in self._classes if name not in self.builtin)

    def registered(self) -> dict[str, T]:
        """The classes registered so far (the built-ins once their module is imported), in `names()` order."""
        return {name: self._classes[name] for name in self.names() if name in self._classes}

    def get(self, name: str) -> T:
        if name not in self._classes:
            raise UnknownName(self.unknown(name))
        return self._classes[name]

    def trait(self, name: str, attribute: str, default=None):
        """A class attribute of the kind `name`: read from its class once registered, else from the
        built-in traits (no import of `home`)."""
        if name in self._classes:
            return getattr(self._classes[name], attribute, default)
        return self._traits.get(name, {}).get(attribute, default)

    def having(self, attribute: str) -> tuple[str, ...]:
        """The names whose class (or built-in trait) sets `attribute` true, in `names()` order."""
        return tuple(name for name in self.names() if self.trait(name, attribute, False))

    def unknown(self, name: str) -> str:
        """The sentence that refuses a name: the nearest registered one, and all of them."""
        names = list(self.names())
        close = difflib.get_close_matches(str(name), names, n=1, cutoff=0.5)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        return f"Unknown {self.what} '{name}'.{hint} Registered: {', '.join(names)}."

    def __contains__(self, name: object) -> bool:
        return name in self.names()

    def __iter__(self):
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def _origin(self, name: str) -> str:
        cls = self._classes.get(name)
        if cls is None:
            return f"built in, {self.home}"
        return f"{getattr(cls, '__module__', '?')}.{getattr(cls, '__qualname__', repr(cls))}"


SCHEDULES = Registry(
    "schedule",
    "schedule.name",
    "core.schedules",
    ("linear", "cosine", "cosine-squared", "log-linear", "gaussian", "bimodal"),
    traits={
        **{name: {"sampling": True} for name in ("linear", "cosine", "cosine-squared", "log-linear")},
        "bimodal": {"progressive": True},
    },
)
MASKING_KINDS = Registry(
    "masking kind",
    "masking.kind",
    "core.masking",
    ("uniform", "frequency"),
    traits={"frequency": {"needs_scores": True}},
)


def needs_scores(kind: str) -> bool:
    """Whether a masking kind reads the corpus frequency scores, and so uses masking.p_freq and its
    curriculum (the trainer counts the scores only then; forms and logs show p_freq only then)."""
    return bool(MASKING_KINDS.trait(kind, "needs_scores", False))


SAMPLERS = Registry("sampler", "samples.sampler", "core.sampling", ("ancestral", "confidence"))

PLUGINS_VARIABLE = "MDLM_TUI_PLUGINS"


def load_plugins() -> list[str]:
    """Import the modules named in $MDLM_TUI_PLUGINS (comma-separated, importable from sys.path), which
    register their schedules, masking kinds, samplers and suites. Every `mdlm-tui` command does this
    first, so a registration reaches the CLI, the TUI and each worker of a run with several (they
    inherit the variable). Importing twice does nothing more."""
    names = [name.strip() for name in os.environ.get(PLUGINS_VARIABLE, "").split(",") if name.strip()]
    for name in names:
        try:
            importlib.import_module(name)
        except UserError:
            raise
        except Exception as e:  # the plugin's own failure, whatever it is, in one sentence
            raise UserError(
                f"{PLUGINS_VARIABLE} names {name}, which could not be imported ({type(e).__name__}: {e}); "
                "check the name and that its folder is on PYTHONPATH."
            ) from None
    return names
