"""``calculate``: numbers only, math functions, bounded work, clear errors (simpleeval, no eval)."""

from __future__ import annotations

import time

import pytest

from services.gateway.agent.tools import ToolContext, ToolError
from services.gateway.agent.tools.calculate import CalculateTool
from services.gateway.config import GatewaySettings

CONTEXT = ToolContext(settings=GatewaySettings(catalog_url="sqlite:///unused.db"))


async def calculate(expression: str) -> object:
    result = await CalculateTool().run({"expression": expression}, CONTEXT)
    assert result.text.endswith(f"= {result.data['value']}") or isinstance(result.data["value"], float)
    return result.data["value"]


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("1 + 2 * 3", 7),
        ("(12.5 * 4 + 3) / 2", 26.5),
        ("2 ** 10", 1024),
        ("sqrt(16) + log(e) + log10(1000)", 8.0),
        ("round(1234 * 1.07 ** 3, 2)", 1511.7),
        ("factorial(5) // 7 % 5", 2),
        ("max(3, 9, 4) - min(2, 8)", 7),
        ("floor(2.7) + ceil(2.1) + abs(-4)", 9),
        ("log(8, 2)", 3.0),
        ("3 > 2", True),
        ("10 if 2 > 1 else 20", 10),
    ],
)
async def test_arithmetic_and_math_functions(expression: str, value: object) -> None:
    assert await calculate(expression) == pytest.approx(value)


async def test_result_text_shows_the_expression_and_value() -> None:
    result = await CalculateTool().run({"expression": "0.5 * 30"}, CONTEXT)
    assert result.text == "0.5 * 30 = 15" and result.data == {"expression": "0.5 * 30", "value": 15.0}
    assert result.short() == "15"


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("__import__('os').system('true')", "Attribute is not available"),
        ("__import__('os')", "unknown function '__import__'"),
        ("(1).__class__", "Attribute is not available"),
        ("open('/etc/passwd')", "unknown function 'open'"),
        ("'a' * 10", "only numbers are allowed"),
        ("[x for x in range(9)]", "not available"),
        ("x + 1", "unknown name 'x'"),
        ("1 / 0", "divides by zero"),
        ("10 ** 5000", "more than 1000 digits"),
        ("9 ** 9 ** 9", "more than 1000 digits"),
        ("factorial(100000)", "factorial() is limited to 400"),
        ("10**600 * 10**600", "more than 1000 digits"),
        ("sqrt(-1)", "math domain error"),
        ("1 +", "is not a valid expression"),
        ("1; 2", "several expressions"),
        ("(-8) ** 0.5", "does not evaluate to a real number"),
    ],
)
async def test_refusals_say_why(expression: str, message: str) -> None:
    with pytest.raises(ToolError) as raised:
        await calculate(expression)
    assert message in str(raised.value)


async def test_limits_keep_every_call_cheap() -> None:
    with pytest.raises(ToolError, match=r"expression: String should have at most 500 characters"):
        await calculate("1+" * 300 + "1")
    started = time.monotonic()
    for expression in ("999999 ** 999999", "comb(10**6, 500000)", "lcm(*[10**999] * 2)"):
        with pytest.raises(ToolError):
            await calculate(expression)
    assert time.monotonic() - started < 2
