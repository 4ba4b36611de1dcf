"""A running stack for the CLI tests, started as ``make run`` starts it, once per module.

The fast bundled pieces are chosen (the ``use`` embedding model, the extractive generator) and
the gateway requires an API key, so every command also proves ``--api-key`` and the 401 path.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from launcher.stack import BackgroundStack, launch_in_background
from services.cli.main import app

REPO = Path(__file__).resolve().parents[3]
OUTPUT = REPO / "test-output" / "cli"
ADMIN_KEY = "zhiku-cli-test-admin-key"
FAST_STACK_ENV = {"ZHIKU_EMBED_LOCAL_MODEL": "use", "ZHIKU_GENERATE_BACKEND": "extractive"}


@dataclass
class Cli:
    """Runs ``zhiku`` in-process against one gateway, wide enough that tables do not wrap.

    Each one has its own config file (``ZHIKU_CONFIG`` in a fresh folder), so what ``zhiku
    login`` stores never comes from, or goes to, the real home folder or another test.
    """

    url: str
    api_key: str | None
    config: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="zhiku-cli-")) / "config.json")

    def __call__(self, *args: str, input: str | None = None, api_key: str | None = None) -> Result:
        key = api_key if api_key is not None else self.api_key
        prefix = ["--url", self.url] + (["--api-key", key] if key else [])
        runner = CliRunner()
        env = {"COLUMNS": "240", "ZHIKU_CONFIG": str(self.config), "ZHIKU_API_KEY": None}
        return runner.invoke(app, [*prefix, *args], input=input, env=env)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundStack]:
    env = {**FAST_STACK_ENV, "ZHIKU_GATEWAY_API_KEYS": ADMIN_KEY}
    try:
        running = launch_in_background(tmp_path_factory.mktemp("cli-data"), OUTPUT / "stack.log", env=env)
    except RuntimeError as error:
        pytest.fail(str(error))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def cli(stack: BackgroundStack) -> Cli:
    return Cli(stack.url, ADMIN_KEY)
