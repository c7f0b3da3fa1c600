"""The version set in one place (issue 24 point 6): firmware/versions.py sets the firmware's
version and reads each format's from the module that writes it; every operator tool prints the
same set with --versions, exit status 0, and does nothing else."""

import bundle
import pytest
import record
import uplink_proto
import versions as fw

from tools import journal_decode, params_compile, params_inspect, provision, versions
from tools.collector import cli
from tools.collector.db import SCHEMA_VERSION


def test_the_set_is_read_from_the_formats_own_modules():
    v = versions.current()
    assert v["firmware"] == fw.FIRMWARE
    assert v["record"] == record.VERSION
    assert v["protocol"] == uplink_proto.VERSION_EPOCH
    assert v["protocol_accepted"] == (uplink_proto.VERSION, uplink_proto.VERSION_EPOCH)
    assert v["bundle_formats"] == (bundle.FORMAT, bundle.FORMAT_SIGNED)
    assert v["collector_schema"] == SCHEMA_VERSION
    assert fw.current(7)["params"] == 7


@pytest.mark.parametrize(
    "main",
    [journal_decode.main, params_inspect.main, params_compile.main, provision.main, cli.main],
    ids=["journal_decode", "params_inspect", "params_compile", "provision", "collector"],
)
def test_every_tool_prints_the_same_set(main, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert versions.main([]) == 0
    want = capsys.readouterr().out
    assert want.startswith("firmware %s\n" % fw.FIRMWARE) and "record format 1" in want
    with pytest.raises(SystemExit) as e:
        main(["--versions"])
    assert e.value.code == 0
    assert capsys.readouterr().out == want
    assert list(tmp_path.iterdir()) == [], "--versions writes nothing"
