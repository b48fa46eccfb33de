"""dvc.yaml declares, for every stage and profile, every module that can change the stage's outputs.

The test follows each `python -m synth2.stages.NAME` stage's imports (its import closure, read from the
source with `ast`) and fails when a module of it is not covered by a declared dep, or when a declared
source dep is reached by no profile. Imports inside functions count: a lazily imported module still
changes outputs. Two refinements keep the closure what can actually run:

* `if TYPE_CHECKING:` imports never execute and are skipped;
* a profile module (synth2/profiles/<profile>.py, chosen at run time by `load_profile`) contributes its
  module-level imports plus the imports of the hooks the stage's modules call (and the functions those
  hooks call), not of every hook: that is what keeps editing the autoencoder from re-running caption_lm.

Modules that provably cannot change an output are in ALLOWED, each with the reason.
"""

from __future__ import annotations

import ast
import shlex
import shutil
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PROFILES = ("world", "coco")

# Reached by stages, yet unable to change what a stage writes.
ALLOWED = {
    "src/synth2/tracking": "MLflow records of the run: written to the tracking store, never to an out",
    "src/synth2/errors.py": "the exception type of one-line errors",
}


def module_path(name: str) -> Path | None:
    """The source file of a synth2 module (package: its __init__.py), or None if there is none."""
    base = SRC / Path(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports_in(nodes: list[ast.stmt], package: str) -> set[str]:
    """synth2 modules imported anywhere in `nodes` (TYPE_CHECKING blocks skipped)."""
    found: set[str] = set()
    stack = list(nodes)
    while stack:
        node = stack.pop()
        if _is_type_checking(node):
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "synth2"}
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*parts, module] if module else parts)
            if module.split(".")[0] == "synth2":
                found.add(module)
                # `from synth2.models import prior` imports the submodule synth2.models.prior.
                found |= {f"{module}.{a.name}" for a in node.names if module_path(f"{module}.{a.name}")}
        stack.extend(ast.iter_child_nodes(node))
    with_parents = set()
    for name in found:
        parts = name.split(".")
        with_parents |= {".".join(parts[: i + 1]) for i in range(len(parts))}
    return {name for name in with_parents if module_path(name)}


def _tree(name: str) -> ast.Module:
    return ast.parse(module_path(name).read_text())


def profile_hooks() -> set[str]:
    """The names of the `Profile` interface (synth2/profiles/__init__.py)."""
    tree = _tree("synth2.profiles")
    protocol = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Profile")
    names = {n.name for n in protocol.body if isinstance(n, ast.FunctionDef)}
    return names | {n.target.id for n in protocol.body if isinstance(n, ast.AnnAssign)}


def profile_imports(profile: str, used: set[str]) -> set[str]:
    """Module-level imports of the profile module plus those of the used hooks and what they call."""
    name = f"synth2.profiles.{profile}"
    tree = _tree(name)
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    found = _imports_in([n for n in tree.body if not isinstance(n, ast.FunctionDef)], name)
    todo, seen = [f for f in used if f in functions], set()
    while todo:
        function = todo.pop()
        if function in seen:
            continue
        seen.add(function)
        found |= _imports_in(functions[function].body, name)
        calls = {n.id for n in ast.walk(functions[function]) if isinstance(n, ast.Name) and n.id in functions}
        todo += sorted(calls - seen)
    return found


def _follow(todo: list[str], seen: set[str]) -> None:
    """Add to `seen` every module reachable from `todo` by imports (profile modules excepted)."""
    while todo:
        name = todo.pop()
        if name in seen or name.startswith("synth2.profiles."):
            continue
        seen.add(name)
        todo += sorted(_imports_in(_tree(name).body, name) - seen)


def closure(module: str, profile: str) -> set[str]:
    """Every synth2 module `python -m module` can execute with `profile`."""
    hooks = profile_hooks()
    seen: set[str] = set()
    _follow([module], seen)
    if "synth2.profiles" in seen:
        used = {n.attr for m in seen for n in ast.walk(_tree(m)) if isinstance(n, ast.Attribute) and n.attr in hooks}
        seen.add(f"synth2.profiles.{profile}")
        _follow(sorted(profile_imports(profile, used) - seen), seen)
    return seen


def relative(name: str) -> str:
    return str(module_path(name).relative_to(ROOT))


def allowed(path: str) -> bool:
    if any(path == a or path.startswith(a + "/") for a in ALLOWED):
        return True
    # A package marker holding only a docstring and constants (e.g. __version__) executes nothing.
    tree = ast.parse((ROOT / path).read_text())
    inert = all(isinstance(n, (ast.Expr, ast.Assign)) and isinstance(n.value, ast.Constant) for n in tree.body)
    return path.endswith("__init__.py") and inert


def stages_for(profile: str, tmp_path: Path) -> dict[str, tuple[str, list[str]]]:
    """{stage address: (stage module, declared dep paths)} as DVC resolves dvc.yaml for `profile`."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    project = tmp_path / profile
    project.mkdir()
    shutil.copy(ROOT / "dvc.yaml", project)
    params = yaml.safe_load((ROOT / "params.yaml").read_text()) | {"profile": profile}
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    Repo.init(str(project), no_scm=True)
    stages = {}
    with Repo(str(project)) as repo:
        for stage in repo.index.stages:
            argv = shlex.split(stage.cmd)
            # The workspace's own sources run (those DVC hashes), not whatever copy is installed.
            assert argv[:3] == ["PYTHONPATH=src", "python", "-m"], (
                f"{stage.name}: cmd should be `PYTHONPATH=src python -m MODULE`"
            )
            deps = [d.def_path for d in stage.deps if not isinstance(d, ParamsDependency)]
            stages[stage.name] = (argv[3], deps)
    return stages


def covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


@pytest.fixture(scope="module")
def resolved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, tuple[str, list[str]]]]:
    tmp = tmp_path_factory.mktemp("dvc-deps")
    return {profile: stages_for(profile, tmp) for profile in PROFILES}


@pytest.mark.parametrize("profile", PROFILES)
def test_every_module_a_stage_runs_is_a_declared_dep(profile: str, resolved):
    missing = {}
    for stage, (module, deps) in resolved[profile].items():
        reached = sorted(relative(m) for m in closure(module, profile))
        gaps = [p for p in reached if not allowed(p) and not covered(p, deps)]
        if gaps:
            missing[stage] = gaps
    assert not missing, f"profile {profile}: modules the stage runs but dvc.yaml does not declare: {missing}"


def test_every_declared_source_dep_is_reached(resolved):
    reached: dict[str, set[str]] = {}
    for profile in PROFILES:
        for stage, (module, _) in resolved[profile].items():
            reached.setdefault(stage, set()).update(relative(m) for m in closure(module, profile))
    extra = {}
    for stage, (_, deps) in resolved["world"].items():
        code = [d for d in deps if d.startswith("src/") and (d.endswith(".py") or (ROOT / d / "__init__.py").exists())]
        unused = [d for d in code if not any(covered(p, [d]) for p in reached[stage])]
        if unused:
            extra[stage] = unused
    assert not extra, f"source deps no profile's run of the stage imports (they only cause re-runs): {extra}"


def test_the_closure_follows_lazy_imports_and_profile_hooks():
    """The analysis itself: a hook's lazy import counts for the stages that call it, and only for them."""
    image_encoder = {relative(m) for m in closure("synth2.stages.image_encoder", "world")}
    caption_lm = {relative(m) for m in closure("synth2.stages.caption_lm", "world")}
    assert "src/synth2/models/autoencoder.py" in image_encoder
    assert "src/synth2/models/autoencoder.py" not in caption_lm
    assert "src/synth2/models/tokenizer.py" in caption_lm
    assert "src/synth2/profiles/world.py" in caption_lm and "src/synth2/profiles/coco.py" not in caption_lm
