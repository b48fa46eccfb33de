"""Generate dvc.yaml from the pipeline's description (synth2.pipeline) and the stages' imports.

    python -m synth2.dvc_yaml            # write dvc.yaml (make dvc.yaml)
    python -m synth2.dvc_yaml --check    # exit 1 when dvc.yaml differs from what would be written

Data deps, params and outs come from synth2.pipeline. Code deps are every synth2 module the stage's
command can run, followed through its imports (read with `ast`, imports inside functions included, since a
lazily imported module still changes outputs; `if TYPE_CHECKING:` blocks skipped). A stage that calls
`load_hooks(params, "NAME")` runs `synth2/profiles/<profile>/NAME.py`: that is declared as
`src/synth2/profiles/${profile}/NAME.py`, and what the hook modules of either profile import is followed
too. Modules that cannot change an output (`UNTRACKED`) are left out, each with its reason, so editing
them re-runs nothing.
"""

from __future__ import annotations

import argparse
import ast
import sys
import textwrap
from pathlib import Path

import yaml

from synth2 import paths
from synth2.launch import stage_module
from synth2.pipeline import PROFILES, STAGES, Stage

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
DVC_YAML = ROOT / "dvc.yaml"
HOOK_LOADER = "load_hooks"

# Reached by stages, yet unable to change what a stage writes.
UNTRACKED = {
    "src/synth2/tracking": "MLflow records of the run: written to the tracking store, never to an out",
    "src/synth2/errors.py": "the exception type of one-line errors",
    "src/synth2/pipeline.py": "the description: what it says about a stage is in dvc.yaml, which DVC watches",
    "src/synth2/paths.py": "the description's paths: a change is a change of dvc.yaml's deps and outs",
}

HEADER = """\
# GENERATED from src/synth2/pipeline.py by `make dvc.yaml` (python -m synth2.dvc_yaml): edit the description
# there, regenerate, commit both; tests/test_dvc_yaml.py fails when they differ.
#
# The Synth² pipeline on the shapes world (profile: world) or on COCO-format data with pretrained Hugging
# Face models (profile: coco): the same stage modules either way (src/synth2/stages/), each calling its
# profile's hook module for the stage (src/synth2/profiles/${profile}/STAGE.py). Commands run the
# workspace's own src/ (what DVC hashes; in a `dvc exp run` that is the experiment's copy) through
# synth2.launch: `python -m synth2.stages.STAGE`, forked from the flow's warm stage server when there is
# one, else in the launcher's own process; the same outputs either way, so the launcher is not a dep. Code
# deps are every module the stage can run, read from its imports; params are declared by key,
# `${profile}.<stage>` for the profile's own subsection, so a coco key never re-runs a world stage and a
# world key never a coco one. The coco profile's data and checkpoints enter through params (coco.*): after
# changing those files in place, run `dvc repro -f prepare`.
"""
# DVC reads params.yaml for `${profile}` by itself when the file is there; named here, a missing params.yaml
# is DVC's "'params.yaml' does not exist" instead of "Could not find 'profile'".
VARS = """\
vars:
- params.yaml  # every ${...} below comes from it; restore it (git checkout params.yaml) if it is missing

"""


# ----------------------------------------------------------------------------------- import analysis


def module_path(name: str) -> Path | None:
    """The source file of a synth2 module (package: its __init__.py), or None if there is none."""
    base = SRC / Path(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _tree(name: str) -> ast.Module:
    return ast.parse(module_path(name).read_text())


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports_of(name: str) -> set[str]:
    """synth2 modules `name` imports anywhere (TYPE_CHECKING blocks skipped), with their parent packages."""
    found: set[str] = set()
    stack: list[ast.AST] = list(_tree(name).body)
    package = name if module_path(name).name == "__init__.py" else name.rpartition(".")[0]
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
    for module in found:
        parts = module.split(".")
        with_parents |= {".".join(parts[: i + 1]) for i in range(len(parts))}
    return {module for module in with_parents if module_path(module)}


def hooks_called(name: str) -> set[str]:
    """The profile hook modules `name` loads: `load_hooks(params, "NAME")` with a literal NAME."""
    hooks = set()
    for node in ast.walk(_tree(name)):
        if isinstance(node, ast.Call) and len(node.args) == 2 and isinstance(node.args[1], ast.Constant):
            func = node.func
            called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if called == HOOK_LOADER:
                hooks.add(node.args[1].value)
    return hooks


def closure(module: str, profile: str) -> set[str]:
    """Every synth2 module `python -m module` can execute with `profile`."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if untracked(relative(name)):
            continue  # what only the tracking code runs (e.g. the champion's bootstrap) cannot change an out either
        todo += sorted(imports_of(name) - seen)
        for hook in hooks_called(name):
            hook_module = f"synth2.profiles.{profile}.{hook}"
            if module_path(hook_module) is None:
                raise SystemExit(f"{name} loads hooks '{hook}' but src/synth2/profiles/{profile}/{hook}.py is missing")
            todo.append(hook_module)
    return seen


def relative(name: str) -> str:
    return str(module_path(name).relative_to(ROOT))


def untracked(path: str) -> bool:
    if any(path == a or path.startswith(a + "/") for a in UNTRACKED):
        return True
    # A package marker holding only a docstring and constants (e.g. __version__) executes nothing.
    tree = ast.parse((ROOT / path).read_text())
    inert = all(isinstance(n, (ast.Expr, ast.Assign)) and isinstance(n.value, ast.Constant) for n in tree.body)
    return path.endswith("__init__.py") and inert


def code_deps(stage: Stage, every_profile: bool = False) -> list[str]:
    """The stage's code deps in every profile: its hook modules as `${profile}`, the rest by path
    (`every_profile`: the hook modules of each profile by path, so no dep depends on `profile`'s value)."""
    module = stage_module(stage.module)
    reached: set[str] = set()
    for profile in PROFILES:
        reached |= {relative(m) for m in closure(module, profile)}
    hook_dirs = tuple(f"src/synth2/profiles/{p}/" for p in PROFILES)
    if every_profile:
        return sorted(p for p in reached if not untracked(p))
    hooks = {f"src/synth2/profiles/${{profile}}/{Path(p).name}" for p in reached if p.startswith(hook_dirs)}
    plain = {p for p in reached if not p.startswith(hook_dirs) and not untracked(p)}
    return sorted(plain) + sorted(hooks)


# -------------------------------------------------------------------------------------------- output


def _out(path: Path | str, cache: bool = True, **options: str | bool | None) -> str | dict:
    settings = ({} if cache else {"cache": False}) | {k: v for k, v in options.items() if v is not None}
    return {str(path): settings} if settings else str(path)


def stage_entry(stage: Stage) -> dict:
    args = " ".join(stage.args)
    body: dict = {"cmd": f"PYTHONPATH=src python -m synth2.launch {stage.module}" + (f" {args}" if args else "")}
    # Every stage waits for the params check (synth2.stages.check_params says why). The check itself must
    # get to run and fail in its own words whatever params.yaml says: no dep of it names `${profile}` (a
    # bogus profile would be DVC's missing-file error), and DVC keeps its previous output while it runs
    # (persist), so a params mistake changes nothing on disk.
    checks_params = paths.PARAMS_CHECK in stage.outs
    check = [] if checks_params else [str(paths.PARAMS_CHECK)]
    body["deps"] = check + [str(d) for d in stage.deps] + code_deps(stage, every_profile=checks_params)
    if stage.params:
        body["params"] = list(stage.params)
    body["outs"] = [_out(o, persist=True) if checks_params else str(o) for o in stage.outs]
    if stage.metrics:
        body["metrics"] = [_out(m, cache=False) for m in stage.metrics]
    if stage.plots:
        body["plots"] = [_out(p.path, cache=False, template=p.template, x=p.x, y=p.y) for p in stage.plots]
    return {"foreach": stage.foreach, "do": body} if stage.foreach else body


def render() -> str:
    """dvc.yaml's text: the header, then each stage under a comment of its doc."""
    parts = [HEADER, VARS, "stages:\n"]
    for stage in STAGES:
        comment = textwrap.wrap(stage.doc, width=104)
        entry = yaml.safe_dump({stage.name: stage_entry(stage)}, sort_keys=False, width=120)
        parts.append("".join(f"  # {line}\n" for line in comment))
        parts.append(textwrap.indent(entry, "  ") + "\n")
    return "".join(parts).rstrip("\n") + "\n"


# ----------------------------------------------------------------------------- what an edit re-runs


def resolved_stages(dvc_yaml: Path, params: Path, profile: str, workdir: Path) -> tuple[dict[str, list[str]], dict]:
    """({stage address: declared dep paths}, {stage: stages it needs}) as DVC resolves `dvc_yaml` for
    `profile`, in a scratch DVC project under `workdir`."""
    import shutil

    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    project = workdir / profile
    project.mkdir(parents=True)
    shutil.copy(dvc_yaml, project / "dvc.yaml")
    (project / "params.yaml").write_text(yaml.safe_dump(yaml.safe_load(params.read_text()) | {"profile": profile}))
    Repo.init(str(project), no_scm=True)
    with Repo(str(project)) as repo:
        deps = {s.name: [d.def_path for d in s.deps if not isinstance(d, ParamsDependency)] for s in repo.index.stages}
        graph = repo.index.graph  # edges: a stage -> the stages whose outputs it reads
        needs = {s.name: {t.name for t in graph.successors(s)} for s in graph.nodes}
    return deps, needs


def _within(file: str, dep: str) -> bool:
    return file == dep or file.startswith(dep.rstrip("/") + "/")


def rerun_counts(deps: dict[str, list[str]], needs: dict[str, set[str]], files: list[str]) -> dict[str, int]:
    """{source file: how many stages `dvc repro` re-runs, at most, when it changes}: the stages that declare
    it (or a directory above it) and every stage downstream of them, except below check_params, whose
    output holds only the profile and so never changes on an edit that passes the check."""
    downstream: dict[str, set[str]] = {stage: set() for stage in deps}
    for stage, upstream in needs.items():
        for other in upstream - {"check_params"}:
            downstream[other].add(stage)

    def with_downstream(stages: set[str]) -> set[str]:
        todo, seen = list(stages), set(stages)
        while todo:
            for later in downstream[todo.pop()] - seen:
                seen.add(later)
                todo.append(later)
        return seen

    counts = {}
    for file in files:
        direct = {s for s, declared in deps.items() if any(_within(file, d) for d in declared)}
        counts[file] = len(with_downstream(direct))
    return counts


def impact_table(before: Path, after: Path = DVC_YAML, profile: str = "world") -> str:
    """A markdown table: per source file under src/synth2 (and each file `before` declared), the stages an
    edit re-runs at most with the `before` dvc.yaml and with `after`, for `profile` (world: the other
    profile's hook modules re-run nothing)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        old_deps, old_needs = resolved_stages(before, ROOT / "params.yaml", profile, Path(tmp) / "before")
        new_deps, new_needs = resolved_stages(after, ROOT / "params.yaml", profile, Path(tmp) / "after")
    declared = {d for paths_ in (*old_deps.values(), *new_deps.values()) for d in paths_ if d.endswith(".py")}
    files = sorted(declared | {str(p.relative_to(ROOT)) for p in (SRC / "synth2").rglob("*.py")})
    old, new = rerun_counts(old_deps, old_needs, files), rerun_counts(new_deps, new_needs, files)
    n_stages = len(new_deps)
    lines = [f"| source file | stages re-run before | after (of {n_stages}) |", "|---|---:|---:|"]
    lines += [f"| `{f.removeprefix('src/')}` | {old[f]} | {new[f]} |" for f in files if old[f] or new[f]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m synth2.dvc_yaml", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if dvc.yaml is not what would be written")
    parser.add_argument(
        "--file", type=Path, default=DVC_YAML, help="the dvc.yaml to write or check (default: the project's)"
    )
    parser.add_argument(
        "--impact", metavar="OLD_DVC_YAML", type=Path, help="print, per source file, the stages an edit re-runs"
    )
    args = parser.parse_args(argv)
    if args.impact:
        print(impact_table(args.impact), end="")
        return
    text = render()
    if args.check:
        if not args.file.is_file() or args.file.read_text() != text:
            print(
                f"{args.file} differs from src/synth2/pipeline.py's description: run `make dvc.yaml`", file=sys.stderr
            )
            sys.exit(1)
        return
    tmp = args.file.with_suffix(".yaml.tmp")
    tmp.write_text(text)
    tmp.replace(args.file)
    print(f"wrote {args.file} ({len(STAGES)} stage descriptions)")


if __name__ == "__main__":
    main()
