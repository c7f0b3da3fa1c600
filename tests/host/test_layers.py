"""tools/layers.py: every firmware and driver module in one package, imports pointing down only."""

import shutil
import xml.etree.ElementTree as ET

from tools import layers


def test_the_tree_keeps_its_layers():
    edges, problems = layers.check()
    assert problems == []
    assert ("nfc", "core") in edges and ("app", "card") in edges
    drivers = {"nfc", "psam", "modem", "rtc"}
    assert {dst for src, dst in edges if src in drivers} <= {"core"}, "drivers use the core only"


def _tree(tmp_path):
    for folder in layers.SOURCES:
        shutil.copytree(layers.ROOT / folder, tmp_path / folder)
    return tmp_path


def test_a_driver_that_imports_the_purchase_is_caught_even_lazily(tmp_path):
    root = _tree(tmp_path)
    f = root / "drivers" / "rc522.py"
    f.write_text(f.read_text() + "\n\ndef _late():\n    import purchase\n\n    return purchase\n")
    _edges, problems = layers.check(root)
    assert len(problems) == 1, problems
    assert problems[0].startswith("drivers/rc522.py:")
    assert "rc522 (nfc, layer 1) imports purchase (card, layer 2)" in problems[0]


def test_a_layer_using_its_neighbour_on_the_same_layer_is_caught(tmp_path):
    root = _tree(tmp_path)
    f = root / "firmware" / "fare.py"
    f.write_text("from tunion import Card  # noqa\n" + f.read_text())
    _edges, problems = layers.check(root)
    assert [p.split(": ", 1)[0] for p in problems] == ["firmware/fare.py:1"]


def test_a_module_in_no_package_is_named(tmp_path):
    root = _tree(tmp_path)
    (root / "firmware" / "newthing.py").write_text("import log\n")
    _edges, problems = layers.check(root)
    assert problems == ["newthing.py: in no package of tools/layers.py PACKAGES"]


def test_the_picture_has_a_box_per_package_and_parses(tmp_path):
    edges, _p = layers.check()
    out = tmp_path / "layers.svg"
    assert layers.main(["--svg", str(out)]) == 0
    tree = ET.parse(out)
    ns = "{http://www.w3.org/2000/svg}"
    assert len(tree.findall(ns + "rect")) == len(layers.PACKAGES)
    assert len(tree.findall(ns + "line")) == len(edges)


def test_the_committed_picture_is_the_tables(tmp_path):
    edges, _p = layers.check()
    committed = (layers.ROOT / "docs" / "architecture.svg").read_text(encoding="utf-8")
    assert committed == layers.svg(edges), "run `make architecture`, commit the picture"
