"""The layout's promises: the README's map names every module, only gptlab.compat touches the private
names of Lightning and Hydra, and only models/ knows which model is which."""

from __future__ import annotations

import ast
import re

from repo import REPO_ROOT

PACKAGE = REPO_ROOT / "src" / "gptlab"


def modules() -> list:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py")


def test_the_readme_layout_names_every_module():
    readme = (REPO_ROOT / "README.md").read_text()
    layout = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    # Each folder is a line "  name/" and each module a line "    name.py" below it.
    folder, named = None, set()
    for line in layout.splitlines():
        if m := re.match(r"^      (\w+)/\s", line):
            folder = m[1]
        elif (m := re.match(r"^        (\w+\.py)\s", line)) and folder:
            named.add(f"{folder}/{m[1]}")
    present = {str(p.relative_to(PACKAGE)) for p in modules()}
    assert present - named == set(), "modules missing from the README's layout map"
    assert named - present == set(), "the README's layout map names modules that do not exist"


def test_the_readme_configs_table_lists_every_option_of_each_group():
    """The table once listed only the preset corpora for data=, though text, hf, shards and mixture were there."""
    readme = (REPO_ROOT / "README.md").read_text()
    table = readme.split("## Configs (`conf/`)", 1)[1].split("\n## ", 1)[0]
    rows = {m[1]: set(re.findall(r"`([\w-]+)`", m[2])) for m in re.finditer(r"^\| `(\w+)` \| ([^|]*) \|", table, re.M)}
    assert rows, "no rows found in the README's Configs table"
    for group, listed in rows.items():
        options = {f.stem for f in (REPO_ROOT / "conf" / group).glob("*.yaml")}
        assert options, f"the README's Configs table names a group conf/ lacks: {group}"
        assert options - listed == set(), f"options of {group}= missing from the README's Configs table"


def _private_uses(path) -> list[str]:
    """``obj._name`` on anything but ``self``/``cls``, and imports of private modules or names."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.endswith("_"):
            owner = node.value
            if not (isinstance(owner, ast.Name) and owner.id in ("self", "cls")):
                found.append(f"{path.name}:{node.lineno} .{node.attr}")
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(("lightning", "hydra")):
            private = [a.name for a in node.names if a.name.startswith("_")]
            if "._" in node.module or private:
                found.append(f"{path.name}:{node.lineno} from {node.module} import {private}")
    return found


def test_only_compat_touches_private_library_names():
    outside = [p for p in modules() if p.relative_to(PACKAGE).parts[0] != "compat"]
    assert [use for p in outside for use in _private_uses(p)] == []


def test_the_guard_sees_a_private_name(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("def f(trainer):\n    return trainer.fit_loop._data_fetcher\n")
    assert _private_uses(sample) == ["sample.py:2 ._data_fetcher"]


MODEL_CLASSES = {"GPT", "TransformerDecoderLM", "HFCausalLM", "TransformerBlock"}


def _model_type_switches(path) -> list[str]:
    """``isinstance(x, GPT)`` and the like: code that asks which model it holds instead of asking the model."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("isinstance", "issubclass"):
            names = {n.id if isinstance(n, ast.Name) else getattr(n, "attr", None) for n in ast.walk(node.args[1])}
            if names & MODEL_CLASSES:
                found.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
    return found


def test_only_models_switch_on_the_models_type():
    outside = [p for p in modules() if p.relative_to(PACKAGE).parts[0] != "models"]
    assert [use for p in outside for use in _model_type_switches(p)] == []


def test_the_model_guard_sees_a_switch(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("def f(m):\n    return isinstance(m, (nn.Linear, models.GPT))\n")
    assert _model_type_switches(sample) == ["sample.py:2 isinstance(m, (nn.Linear, models.GPT))"]


def test_compat_warns_on_a_version_its_patches_were_not_written_for():
    import warnings

    from gptlab.compat import warn_if_untested

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_if_untested("lightning", "2.6.6", "2.6.6", "exact resume")
        assert caught == []
        warn_if_untested("lightning", "2.7.0", "2.6.6", "exact resume")
    [warning] = caught
    assert "written for lightning 2.6.6 and this is 2.7.0" in str(warning.message)
    assert "lightning==2.6.6" in str(warning.message)
