"""A recipe's identity follows what its function reaches, read from the source without importing
it: the definitions it uses, wherever they live, and not the rest of their modules; code that
defeats reading is taken whole; the identity cache notices every change that matters."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from buildsys.build import identities
from buildsys.build.identities import IdentityCache
from buildsys.keys.identity import RecipeNotFound, reaches_changes, recipe_identity

HELPERS = {
    "pk/__init__.py": "",
    "pk/shapes.py": '''
        from __future__ import annotations

        import math

        from pk.units import METRE

        RADIUS = 2 * METRE


        def unused(x):
            return x


        def area(r: Circle = None):
            return math.pi * RADIUS ** 2


        class Circle:
            def perimeter(self):
                return 2 * math.pi * RADIUS
    ''',
    "pk/units.py": '''
        METRE = 1.0
        FOOT = 0.3048
    ''',
    "pk/setup.py": '''
        import numpy as np

        np.seterr(all="raise")


        def configured():
            return True
    ''',
}


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def _reaches(root: Path, recipe: str, ref: str = "rc:run", files: dict[str, str] | None = None) -> list[str]:
    _write(root, {**HELPERS, **(files or {}), "rc.py": recipe})
    return sorted(recipe_identity(ref, [root]).reaches)


def test_only_what_the_function_uses_and_what_that_uses(tmp_path: Path):
    recipe = '''
        from pk.shapes import area
        from pk import units

        def run(ctx):
            return area() + units.FOOT

        def other(ctx):
            from pk.shapes import Circle
            return Circle()
    '''
    assert _reaches(tmp_path, recipe) == ["pk.shapes:RADIUS", "pk.shapes:area", "pk.units:FOOT", "pk.units:METRE", "rc:run"]
    # an annotation is not evaluated under `from __future__ import annotations`: Circle is not reached
    assert _reaches(tmp_path, recipe, "rc:other") == ["pk.shapes:Circle", "pk.shapes:RADIUS", "pk.units:METRE", "rc:other"]


def test_module_attributes_nested_imports_and_top_level_statements(tmp_path: Path):
    recipe = '''
        import pk.shapes as shapes

        def run(ctx):
            import pk.setup
            return shapes.Circle().perimeter() if pk.setup.configured() else None
    '''
    assert _reaches(tmp_path, recipe) == [
        "pk.setup:(top level)", "pk.setup:configured", "pk.shapes:Circle", "pk.shapes:RADIUS", "pk.units:METRE", "rc:run",
    ]
    identity = recipe_identity("rc:run", [tmp_path])
    assert set(identity.libraries) >= {"numpy"} and identity.libraries["numpy"] not in ("", "not installed")
    assert set(identity.modules) == {"rc", "pk", "pk.shapes", "pk.units", "pk.setup"}


def test_an_edit_changes_exactly_the_definitions_it_touches(tmp_path: Path):
    recipe = "from pk.shapes import area\n\ndef run(ctx):\n    return area()\n"
    _reaches(tmp_path, recipe)
    before = recipe_identity("rc:run", [tmp_path])
    shapes = tmp_path / "pk/shapes.py"
    shapes.write_text(shapes.read_text().replace("return x", "return -x") + "\n# a comment at the end\n")
    assert recipe_identity("rc:run", [tmp_path]).code == before.code
    (tmp_path / "pk/units.py").write_text("METRE = 1.0  # SI\nFOOT = 0.3048\n")
    after = recipe_identity("rc:run", [tmp_path])
    assert reaches_changes(before.reaches, after.reaches) == ["pk.units:METRE changed"]


@pytest.mark.parametrize("dynamic", ["globals()['area']()", "eval('1')", "__import__('pk.units')", "importlib.import_module(name)"])
def test_code_that_defeats_reading_is_taken_whole(tmp_path: Path, dynamic: str):
    recipe = f'''
        import importlib
        from pk.shapes import area

        name = "pk.units"

        def spare():
            return 1

        def run(ctx):
            return {dynamic}
    '''
    reached = _reaches(tmp_path, recipe)
    assert {"rc:spare", "pk.shapes:unused", "pk.shapes:Circle", "pk.units:FOOT"} <= set(reached)


def test_a_constant_module_name_is_followed_and_a_star_import_resolved(tmp_path: Path):
    recipe = '''
        import importlib
        from pk.units import *

        def run(ctx):
            return importlib.import_module("pk.setup").configured() * FOOT
    '''
    reached = _reaches(tmp_path, recipe)
    assert {"pk.setup:configured", "pk.setup:(top level)", "pk.units:FOOT", "rc:run"} <= set(reached)
    assert "pk.shapes:area" not in reached


def test_a_missing_recipe_or_a_syntax_error_is_reported(tmp_path: Path):
    (tmp_path / "broken.py").write_text("def run(ctx:\n")
    with pytest.raises(RecipeNotFound, match="broken.py:1: syntax error"):
        recipe_identity("broken:run", [tmp_path])
    with pytest.raises(RecipeNotFound, match="no module 'absent'"):
        recipe_identity("absent:run", [tmp_path])


def test_an_editable_install_is_read_as_code_not_versioned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """pip install -e: the version does not follow the code, so the code is hashed."""
    checkout, site = tmp_path / "checkout", tmp_path / "site"
    _write(checkout, {"studiolib_e/__init__.py": "def weld(n):\n    return n + 1\n\ndef spare():\n    return 0\n"})
    meta = site / "studiolib_e-0.1.dist-info"
    _write(meta.parent, {
        "studiolib_e-0.1.dist-info/METADATA": "Name: studiolib-e\nVersion: 0.1\n",
        "studiolib_e-0.1.dist-info/RECORD": "__editable__.studiolib_e-0.1.pth,,\n",
        "studiolib_e-0.1.dist-info/direct_url.json": f'{{"url": "file://{checkout}", "dir_info": {{"editable": true}}}}',
    })
    monkeypatch.setattr(sys, "path", [*sys.path, str(site), str(checkout)])
    _write(tmp_path / "project", {"rc.py": "import studiolib_e\n\ndef run(ctx):\n    return studiolib_e.weld(1)\n"})
    identity = recipe_identity("rc:run", [tmp_path / "project"])
    assert sorted(identity.reaches) == ["rc:run", "studiolib_e:weld"]
    assert "studiolib-e" not in identity.libraries


def test_a_requirement_of_another_platform_is_not_in_the_closure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Requires-Dist lines whose environment marker is false here are not requirements here, even
    when a distribution of that name can be found (``import ray`` puts its vendored colorama on
    sys.path: tqdm's Windows-only requirement of it made a cluster client's keys differ)."""
    from buildsys.keys.distributions import library_versions

    site = tmp_path / "site"
    _write(site, {
        "studiolib_m/__init__.py": "",
        "studiolib_m-1.0.dist-info/METADATA": (
            "Name: studiolib-m\nVersion: 1.0\nRequires-Dist: studiolib-here; python_version >= '3'\n"
            "Requires-Dist: studiolib-elsewhere>=2; sys_platform == 'nonesuch'\nRequires-Dist: studiolib-extra; extra == 'dev'\n"
        ),
        "studiolib_m-1.0.dist-info/top_level.txt": "studiolib_m\n",
        **{f"{name}-1.0.dist-info/METADATA": f"Name: {name.replace('_', '-')}\nVersion: 1.0\n"
           for name in ("studiolib_here", "studiolib_elsewhere", "studiolib_extra")},
    })
    monkeypatch.setattr(sys, "path", [*sys.path, str(site)])
    assert library_versions({"studiolib_m"}) == {"studiolib-m": "1.0", "studiolib-here": "1.0"}


def test_the_identity_cache_notices_edits_new_modules_and_installs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    recipe = "import helper_c\n\ndef run(ctx):\n    return helper_c.value()\n"
    _write(tmp_path / "p", {"rc.py": recipe, "helper_c.py": "def value():\n    return 1\n"})
    store = tmp_path / "store"
    store.mkdir()
    computed = []
    real = identities.recipe_identity
    monkeypatch.setattr(identities, "recipe_identity", lambda ref, roots: computed.append(ref) or real(ref, roots))
    settled = time.time() - 10  # written long enough ago for the racy rule, and any edit shows
    for path in [tmp_path / "p", *(tmp_path / "p").iterdir()]:
        os.utime(path, (settled, settled))

    def identity():
        cache = IdentityCache(store / "identities", store)
        found = cache.identity("rc:run", [tmp_path / "p"])
        cache.save()
        return found

    first = identity()
    assert identity() == first and computed == ["rc:run"]
    (tmp_path / "p/helper_c.py").write_text("def value():\n    return 2\n")
    os.utime(tmp_path / "p/helper_c.py", (settled + 1, settled + 1))
    assert identity().code != first.code and len(computed) == 2
    identity()
    assert len(computed) == 2
    (tmp_path / "p/unrelated.py").write_text("")  # a new module in a folder the walk looked in
    os.utime(tmp_path / "p", (settled + 2, settled + 2))
    identity()
    assert len(computed) == 3
    site = tmp_path / "site"  # a new sys.path folder's contents: what installing a distribution changes
    site.mkdir()
    os.utime(site, (settled, settled))
    monkeypatch.setattr(sys, "path", [*sys.path, str(site)])
    identity()
    identity()
    assert len(computed) == 4
    (site / "helper_c-1.0.dist-info").mkdir()
    os.utime(site, (settled + 3, settled + 3))
    identity()
    assert len(computed) == 5


def test_a_file_written_within_the_racy_window_is_not_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    _write(tmp_path / "p", {"rc.py": "def run(ctx):\n    return 1\n"})
    computed = []
    real = identities.recipe_identity
    monkeypatch.setattr(identities, "recipe_identity", lambda ref, roots: computed.append(ref) or real(ref, roots))
    monkeypatch.setattr(identities, "RACY_NS", 10**18)
    cache = IdentityCache(tmp_path / "identities", tmp_path)
    cache.identity("rc:run", [tmp_path / "p"])
    cache.identity("rc:run", [tmp_path / "p"])
    assert len(computed) == 2 and not cache.dirty
