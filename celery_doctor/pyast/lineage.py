"""Which class names may lead, through the classes of the tree, to a given base: read from the text of every file.

Project.is_task_class and the ORM model index follow a class's bases by name (Project.cls), and each lookup of a
deferred file parses it and keeps its tree. Most of those lookups cannot answer yes: on a large tree they parsed
tens of thousands of lines (Django's and the project's class hierarchies) to learn that a class is not a task.
`Lineage.derived` answers, without parsing anything, which names can: a lookup of any other name is skipped, and
the answer is the same, since a class whose chain reaches the base has every name of that chain in the set:

- the chain's last class names the base in its base list (`class T(celery.Task)`: the word `Task`);
- each class names the next one in its base list, by its own name or by a name it was imported under
  (`from proj.base import BaseTask as Basis`), and the lookup's name is the last part of the dotted base.

The set is a superset (it comes from regular expressions over the text, comments and strings included).
"""
from __future__ import annotations

from typing import Iterable

from .prefilter import alias_pairs, class_bases, defined_names


class Lineage:
    def __init__(self, texts: Iterable[str]):
        self._subclasses: dict[str, set[str]] = {}  # a word of a base list -> the classes naming it
        self._aliases: dict[str, set[str]] = {}  # X -> every Y of `X as Y`
        self._tabled: set[str] = set()  # the classes (and functions) of files that set __tablename__
        for text in texts:
            classes = class_bases(text)
            for name, words in classes:
                for word in words:
                    self._subclasses.setdefault(word, set()).add(name)
            if "__tablename__" in text:
                self._tabled |= defined_names(text)  # a class without a base list too
            if "as" in text:
                for original, alias in alias_pairs(text):
                    self._aliases.setdefault(original, set()).add(alias)
        self._derived: dict[tuple[frozenset, bool], frozenset[str]] = {}

    def derived(self, bases: frozenset[str], tablename: bool = False) -> frozenset[str]:
        """The names of `bases`, of every class that may derive from one of them through the tree's classes, and
        of what they may be imported as; with `tablename`, from a class that sets `__tablename__` too."""
        key = (bases, tablename)
        if key not in self._derived:
            found = set(bases) | (self._tabled if tablename else set())
            pending = list(found)
            while pending:
                name = pending.pop()
                for other in self._subclasses.get(name, set()) | self._aliases.get(name, set()):
                    if other not in found:
                        found.add(other)
                        pending.append(other)
            self._derived[key] = frozenset(found)
        return self._derived[key]
