"""What a model formula may say (security-critical): column names, numbers and a few transforms.

statsmodels evaluates formula terms as Python code (``I(__import__('os').system(...))`` runs),
so a formula from a record is refused unless it is only the formula language over the data's
columns: ``~ + - * / : ** ( )``, numbers, ``C(column)`` (with a string level or treatment),
``I(...)``, ``Q('column')`` and the transforms in :data:`FUNCTIONS` (plain or as ``np.<name>``).
The check parses the formula with Python's own parser (``:`` read as ``&``) and walks the tree;
anything else — attributes, subscripts, lambdas, keywords other than ``Treatment``'s, dunder names,
names that are not columns — is a :class:`UnsafeFormulaError` naming what was found.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable

from enclave.core.errors import BadInputError

FUNCTIONS = frozenset({"log", "log1p", "log2", "log10", "exp", "sqrt", "abs", "center",
                       "standardize", "scale", "bs", "cr", "cc", "poly"})
WRAPPERS = frozenset({"C", "I", "Q", "Treatment", "Sum", "Diff", "Poly"})
OPERATORS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow, ast.BitAnd, ast.USub, ast.UAdd)


class UnsafeFormulaError(BadInputError):
    """A model formula says more than the formula language over the data's columns."""


def _refuse(what: str) -> UnsafeFormulaError:
    return UnsafeFormulaError(f"the model formula contains {what}; only column names, numbers, "
                              "+ - * / : ** and C(), I(), Q(), log, exp, sqrt … are allowed")


def _check(node: ast.AST, columns: set[str], inside_call: bool) -> None:
    if isinstance(node, ast.Expression):
        _check(node.body, columns, inside_call)
    elif isinstance(node, ast.BinOp):
        if not isinstance(node.op, OPERATORS):
            raise _refuse(f"the operator {type(node.op).__name__}")
        _check(node.left, columns, inside_call)
        _check(node.right, columns, inside_call)
    elif isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, OPERATORS):
            raise _refuse(f"the operator {type(node.op).__name__}")
        _check(node.operand, columns, inside_call)
    elif isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float, str)):
            raise _refuse("a constant that is not a number")
        if isinstance(node.value, str) and not inside_call:
            raise _refuse("a string outside C(), Q() or Treatment()")
    elif isinstance(node, ast.Name):
        if node.id not in columns:
            raise _refuse(f"the name '{node.id}', which is not a column of the data")
    elif isinstance(node, ast.Call):
        func = node.func
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) \
                and func.value.id in ("np", "numpy") and func.attr in FUNCTIONS:
            pass
        elif not (isinstance(func, ast.Name) and func.id in FUNCTIONS | WRAPPERS):
            raise _refuse("a call of something other than C(), I(), Q() or a listed transform")
        for kw in node.keywords:
            if kw.arg not in ("reference", "levels", "df", "degree"):
                raise _refuse(f"the keyword '{kw.arg}'")
            _check(kw.value, columns, True)
        for arg in node.args:
            _check(arg, columns, True)
    elif isinstance(node, (ast.List, ast.Tuple)) and inside_call:
        for elt in node.elts:
            _check(elt, columns, True)
    else:
        raise _refuse(f"an expression of kind {type(node).__name__}")


def check_formula(formula: object, columns: Iterable[str]) -> None:
    """Refuse ``formula`` unless it is ``lhs ~ rhs`` in the formula language over ``columns``."""
    if not isinstance(formula, str) or formula.count("~") != 1 or len(formula) > 2000:
        raise UnsafeFormulaError("the model formula must be one 'outcome ~ terms' of at most "
                                 "2000 characters")
    cols = {c for c in columns if c.isidentifier()}
    for side in formula.split("~"):
        text = side.strip().replace(":", "&")
        if not text:
            raise UnsafeFormulaError("the model formula has an empty side")
        try:
            tree = ast.parse(text, mode="eval")
        except SyntaxError:
            raise UnsafeFormulaError("the model formula does not parse as the formula "
                                     "language") from None
        _check(tree, cols, False)
