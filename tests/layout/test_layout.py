"""The layout rules of issue 21, checked so they cannot quietly erode.

Names are how a newcomer finds things: two classes called ``Job`` in two services send a
reader (and an import) to the wrong one. The ingest service runs as two processes (the gRPC
API and the Celery worker) over one store; its parts meet through public names only, so each
can change inside without breaking the other.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ROOT / "services"
INGEST = SERVICES / "ingest"
INGEST_PARTS = ("api", "worker", "store", "documents")

# Names that two modules may share because they are one concept seen from two processes:
# the CLI's TypedDicts describe exactly the JSON the gateway's response models produce.
SAME_CONCEPT = {
    name: {"services/cli/client.py", gateway_module}
    for name, gateway_module in {
        "Job": "services/gateway/schemas/native.py",
        "KnowledgeBase": "services/gateway/schemas/native.py",
        "SearchHit": "services/gateway/schemas/native.py",
        "ApiKey": "services/gateway/routes/keys.py",
        "User": "services/gateway/schemas/identity.py",
        "Login": "services/gateway/schemas/identity.py",
        "Group": "services/gateway/schemas/identity.py",
        "Member": "services/gateway/schemas/identity.py",
    }.items()
}


def _production_modules() -> list[Path]:
    return [path for path in SERVICES.rglob("*.py") if "tests" not in path.relative_to(SERVICES).parts]


def _classes() -> dict[str, set[str]]:
    found: dict[str, set[str]] = defaultdict(set)
    for path in _production_modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                found[node.name].add(path.relative_to(ROOT).as_posix())
    return found


def test_no_two_classes_share_a_name_unless_one_concept() -> None:
    shared = {name: paths for name, paths in _classes().items() if len(paths) > 1}
    unexplained = {name: sorted(paths) for name, paths in shared.items() if SAME_CONCEPT.get(name) != paths}
    assert unexplained == {}


def test_misleading_module_names_are_gone() -> None:
    assert not (SERVICES / "gateway" / "backends.py").exists()
    assert not (INGEST / "models.py").exists()


def _part(path: Path) -> str | None:
    relative = path.relative_to(INGEST).parts
    return relative[0] if len(relative) > 1 and relative[0] in INGEST_PARTS else None


def _private_imports_across_parts(path: Path) -> list[str]:
    """``from services.ingest.<other part>... import _name`` (or of the module itself)."""
    own = _part(path)
    crossings = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.ImportFrom) or not (node.module or "").startswith("services.ingest."):
            continue
        target = node.module.split(".")
        other = target[2] if target[2] in INGEST_PARTS else None
        if other == own:
            continue
        private = [alias.name for alias in node.names if alias.name.startswith("_")]
        if private or any(part.startswith("_") and part != "__init__" for part in target[2:]):
            crossings.append(f"{path.relative_to(ROOT)}: from {node.module} import {', '.join(private)}")
    return crossings


def test_ingest_parts_are_separate_places() -> None:
    for part in INGEST_PARTS:
        assert (INGEST / part / "__init__.py").is_file(), part
    assert (INGEST / "jobs.py").is_file()


def test_ingest_parts_meet_through_public_names_only() -> None:
    crossings = [line for path in INGEST.rglob("*.py") for line in _private_imports_across_parts(path)]
    assert crossings == []
