"""``calculate``: arithmetic the model should not do in its head, with ``simpleeval`` (no ``eval``).

``simpleeval`` walks Python's AST and evaluates only the nodes it knows. This evaluator
narrows it further to numbers: no strings, subscripts, attributes, comprehensions or
f-strings; names are the math constants; functions are the math module's usual ones.
Results are kept small (a power or a product beyond ``MAX_DIGITS`` digits, a factorial beyond
``MAX_FACTORIAL``, an expression beyond ``MAX_EXPRESSION_CHARS`` are refused), so one call
cannot keep the gateway's CPU busy.
"""

from __future__ import annotations

import ast
import math
import operator
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import simpleeval  # type: ignore[import-untyped]
from pydantic import Field

from services.gateway.agent.tools.base import (
    Arguments,
    ToolContext,
    ToolError,
    ToolResult,
    parameters_of,
    parse_arguments,
)

MAX_EXPRESSION_CHARS = 500
MAX_DIGITS = 1000  # of any integer an operation may produce
MAX_FACTORIAL = 400  # 400! has 869 digits
MAX_COMBINATORIC_N = 2000
Number = int | float
_Value = TypeVar("_Value")


class CalculateArguments(Arguments):
    expression: str = Field(
        description=(
            "An arithmetic expression, e.g. '(12.5 * 4 + 3) / 2', 'sqrt(2) * pi', "
            "'round(1234 * 1.07 ** 3, 2)'. Operators: + - * / // % ** and comparisons; functions: "
            "sqrt, log (natural; log(x, base)), log10, exp, sin, cos, tan, round, abs, min, max, "
            "floor, ceil, factorial and more from Python's math module; constants pi, e."
        ),
        min_length=1,
        max_length=MAX_EXPRESSION_CHARS,
    )


def _digits(value: float) -> float:
    """Roughly how many decimal digits ``value``'s integer part has."""
    return math.log10(abs(value)) + 1 if value else 1


def _bounded(value: _Value) -> _Value:
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_DIGITS * 3.33:
        raise simpleeval.NumberTooHigh(f"the result would have more than {MAX_DIGITS} digits")
    return value


def _power(base: Number, exponent: Number) -> Number:
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and base not in (0, 1, -1):
        if exponent * _digits(base) > MAX_DIGITS:
            raise simpleeval.NumberTooHigh(f"{base} ** {exponent} would have more than {MAX_DIGITS} digits")
    try:
        result: Number = base**exponent  # int ** int is typed Any: a negative exponent gives a float
        return _bounded(result)
    except OverflowError:
        raise simpleeval.NumberTooHigh(f"{base} ** {exponent} is too large") from None


# Operators and functions get whatever their operands evaluated to (simpleeval checks nothing),
# hence `object` where they check the types themselves.
def _multiply(left: object, right: object) -> Number:
    if not isinstance(left, int | float) or not isinstance(right, int | float):
        raise simpleeval.InvalidExpression("only numbers can be multiplied")
    if isinstance(left, int) and isinstance(right, int) and _digits(left) + _digits(right) > MAX_DIGITS + 1:
        raise simpleeval.NumberTooHigh(f"the product would have more than {MAX_DIGITS} digits")
    return left * right


def _factorial(value: object) -> int:
    if not isinstance(value, int) or value < 0:
        raise simpleeval.InvalidExpression("factorial() takes a non-negative integer")
    if value > MAX_FACTORIAL:
        raise simpleeval.NumberTooHigh(f"factorial() is limited to {MAX_FACTORIAL}")
    return math.factorial(value)


def _checked(function: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        return _bounded(function(*args))

    return call


def _combinatoric(function: Callable[..., int]) -> Callable[..., int]:
    """comb/perm with n limited like factorial (their cost grows with n before any check)."""

    def call(n: object, *rest: object) -> int:
        if isinstance(n, int) and n > MAX_COMBINATORIC_N:
            raise simpleeval.NumberTooHigh(f"{function.__name__}() is limited to n <= {MAX_COMBINATORIC_N}")
        return _bounded(function(n, *rest))

    return call


OPERATORS: dict[type[ast.AST], Callable[..., Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: _multiply,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: _power,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Gt: operator.gt,
    ast.Lt: operator.lt,
    ast.GtE: operator.ge,
    ast.LtE: operator.le,
    ast.Not: operator.not_,
}
FUNCTIONS: dict[str, Callable[..., Any]] = {
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
    "int": int,
    "float": float,
    "sqrt": math.sqrt,
    "cbrt": math.cbrt,
    "exp": math.exp,
    "log": math.log,
    "log10": math.log10,
    "log2": math.log2,
    "ln": math.log,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "asin": math.asin,
    "acos": math.acos,
    "atan": math.atan,
    "atan2": math.atan2,
    "sinh": math.sinh,
    "cosh": math.cosh,
    "tanh": math.tanh,
    "degrees": math.degrees,
    "radians": math.radians,
    "hypot": math.hypot,
    "floor": math.floor,
    "ceil": math.ceil,
    "trunc": math.trunc,
    "factorial": _factorial,
    "gcd": math.gcd,
    "lcm": _checked(math.lcm),
    "comb": _combinatoric(math.comb),
    "perm": _combinatoric(math.perm),
    "fsum": math.fsum,
}
NAMES: dict[str, Number | bool] = {
    "pi": math.pi,
    "e": math.e,
    "tau": math.tau,
    "inf": math.inf,
    "True": True,
    "False": False,
}
# The AST nodes a numeric expression needs; everything else simpleeval knows is switched off.
ALLOWED_NODES = (ast.Expr, ast.Name, ast.UnaryOp, ast.BinOp, ast.BoolOp, ast.Compare, ast.IfExp, ast.Call)


class NumericEval(simpleeval.SimpleEval):  # type: ignore[misc]
    """simpleeval limited to numbers: only ``ALLOWED_NODES`` and numeric constants."""

    def __init__(self) -> None:
        super().__init__(operators=dict(OPERATORS), functions=dict(FUNCTIONS), names=dict(NAMES))
        self.nodes: dict[type[ast.AST], Any] = {
            node: handler for node, handler in self.nodes.items() if node in ALLOWED_NODES
        }
        self.nodes[ast.Constant] = self._number

    def _number(self, node: ast.Constant) -> Number:
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise simpleeval.FeatureNotAvailable(f"only numbers are allowed, not {node.value!r}")
        return _bounded(node.value)


def evaluate(expression: str) -> Number | bool:
    """The value of ``expression``, or :class:`ToolError` saying why it has none."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ToolError(f"the expression is longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", simpleeval.MultipleExpressions)
            value = NumericEval().eval(expression.strip())
    except simpleeval.MultipleExpressions:
        raise ToolError(f"{expression!r} holds several expressions; send one per call") from None
    except simpleeval.FunctionNotDefined as error:
        raise ToolError(f"unknown function {error.func_name!r}; available: {', '.join(FUNCTIONS)}") from None
    except simpleeval.NameNotDefined as error:
        raise ToolError(f"unknown name {error.name!r}; available: pi, e, tau, inf") from None
    except simpleeval.InvalidExpression as error:
        raise ToolError(f"cannot evaluate {expression!r}: {error}") from None
    except SyntaxError as error:
        raise ToolError(f"{expression!r} is not a valid expression: {error.msg}") from None
    except ZeroDivisionError:
        raise ToolError(f"{expression!r} divides by zero") from None
    except (ValueError, TypeError, OverflowError) as error:
        raise ToolError(f"cannot evaluate {expression!r}: {error}") from None
    if not isinstance(value, int | float | bool):
        raise ToolError(f"{expression!r} does not evaluate to a real number")
    return value


def _shown(value: Number | bool) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)


class CalculateTool:
    name = "calculate"
    description = (
        "Evaluate an arithmetic expression exactly and return its value. Use it for any "
        "calculation instead of computing in your head."
    )
    parameters = parameters_of(CalculateArguments)

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        expression = parse_arguments(CalculateArguments, arguments).expression
        value = evaluate(expression)
        shown = _shown(value)
        return ToolResult(
            text=f"{expression} = {shown}", data={"expression": expression, "value": value}, summary=shown
        )
