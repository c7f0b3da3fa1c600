"""Host side of issue 7: the blacklist format and bundles under CPython (hypothesis, a plain set
as the oracle), the compiler from TOML/CSV sources and the inspector, including their errors."""

import io
import os
import random
import re

import bundle
import cardlists as cl
import params
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tools import params_compile as pc
from tools import params_inspect as pi

KEY = b"host-test-device-secret"
EX = pc.EXAMPLE
CARD = st.integers(min_value=0, max_value=10**19 - 1)


def lookup_all(cards, probes):
    data = cl.blacklist_bytes(cards)
    assert len(data) % cl.BLOCK == 0
    dev = cl.CountingBlocks(cl.FileBlocks(io.BytesIO(data)))
    bl = cl.Blacklist(dev)
    assert bl.count == len(set(cards))
    oracle = set(cards)
    for c in list(oracle) + list(probes):
        dev.reset()
        assert bl.contains(c) == (c in oracle), c
        assert len(dev.touched) <= 2
    return data


@settings(max_examples=60, deadline=None)
@given(st.sets(CARD, max_size=400), st.lists(CARD, max_size=100))
def test_blacklist_matches_a_set(cards, probes):
    lookup_all(sorted(cards), probes + [(c + 1) % 10**19 for c in cards])


@settings(max_examples=30, deadline=None)
@given(
    st.integers(min_value=0, max_value=10**19 - 10**6),
    st.sets(st.integers(min_value=0, max_value=5000), min_size=1, max_size=3000),
)
def test_blacklist_clustered_numbers(base, offsets):
    # Real card numbers share issuer prefixes and run in sequences: the mix must spread them.
    cards = [base + o for o in offsets]
    lookup_all(cards, [base + o for o in range(0, 5001, 7)])


def test_blacklist_40k_size_and_blocks():
    rng = random.Random(5)
    cards = [rng.randrange(10**19) for _ in range(40_000)]
    data = lookup_all(cards, [rng.randrange(10**19) for _ in range(2000)])
    # 64 - k remainder bits shrink as the list grows: ~6.7 bytes here, ~5.8 at a million
    n = len(set(cards))
    k = cl.choose_k(n)
    bits = 64 - k + 1 + 2**k / n  # remainder, the card's bitmap one, its share of bucket ends
    # + 1% for block heads and bucket slack, + header, index and the part-filled last block
    assert len(data) / n < bits / 8 * 1.01 + 3 * cl.BLOCK / n


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(CARD, st.booleans(), max_size=60),
    st.lists(CARD, max_size=40),
    st.lists(CARD, max_size=40),
)
def test_overlay_merge_matches_a_dict(start, adds, removes):
    old = cl.merge_overlay(
        b"", [c for c, v in start.items() if v], [c for c, v in start.items() if not v]
    )
    merged = cl.merge_overlay(old, adds, removes)
    want = dict(start)
    for c in removes:
        want[c] = False
    for c in adds:
        want[c] = True
    ov = cl.Overlay(io.BytesIO(merged), len(merged))
    buf = bytearray(cl.BLOCK)
    for c, v in want.items():
        assert ov.get(c, buf) == (1 if v else 0)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(min_value=1, max_value=2**32 - 1),
    st.integers(min_value=0, max_value=2**32 - 1),
    st.sets(CARD, max_size=50),
    st.data(),
)
def test_bundle_round_trip_and_any_flip_refused(version, activation, cards, data):
    cfg = {"settings": {}, "fares": {"routes": {"1": {"fare": 1}}}, "x": "\u4ea4\u901a"}
    raw = bundle.build(KEY, version, activation, cfg, cl.blacklist_bytes(cards))
    hdr = bundle.verify_bytes(raw, KEY)
    assert (hdr.version, hdr.activation) == (version, activation)
    assert bundle.read_config(bundle.open_bytes(raw), hdr) == cfg
    pos = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    bit = data.draw(st.integers(min_value=0, max_value=7))
    bad = bytearray(raw)
    bad[pos] ^= 1 << bit
    with pytest.raises(bundle.BundleError):
        bundle.verify_bytes(bytes(bad), KEY)
    cut = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    with pytest.raises(bundle.BundleError):
        bundle.verify_bytes(raw[:cut], KEY)


def versioned(tmp_path, version):
    """The example TOML with its [bundle] version set: the one place a version is set."""
    toml = tmp_path / ("fares-v%d.toml" % version)
    text = (EX / "fares.toml").read_text()
    toml.write_text(text.replace("version = 1\n", "version = %d\n" % version, 1))
    return str(toml)


def test_example_sources_compile_and_inspect(tmp_path):
    out = tmp_path / "b.bin"
    rc = pc.main([
        "--fares", versioned(tmp_path, 9),
        "--whitelist", str(EX / "whitelist.csv"), "--blacklist", str(EX / "blacklist.csv"),
        "--key-hex", KEY.hex(), "-o", str(out), "--quiet", "--version", "9",
    ])  # fmt: skip
    assert rc == 0
    raw = out.read_bytes()
    hdr = bundle.verify_bytes(raw, KEY)
    assert hdr.version == 9
    assert hdr.activation == pc.parse_time("2026-01-01T00:00:00+08:00")
    cfg = bundle.read_config(bundle.open_bytes(raw), hdr)
    settings_, engine, wl = params.check_config(cfg)
    assert settings_["max_fare"] == 2000
    assert wl.listed("02002900") and not wl.listed("02002901")
    lines = []
    with open(out, "rb") as f:
        pi.inspect(f, len(raw), KEY, ["3104991585000011383", "3104991585000011384"], lines.append)
    text = "\n".join(lines)
    assert "MAC: ok" in text
    assert "blacklist: 3 cards" in text
    assert "lookup 3104991585000011383: LISTED" in text
    assert "lookup 3104991585000011384: not listed" in text
    assert pi.main([str(out), "--key-hex", "00"]) == 1
    assert pi.main([str(out)]) == 0  # no key: described, MAC flagged as not checked
    assert pi.main([str(tmp_path / "missing.bin")]) == 2


def test_delta_bundle_from_csv(tmp_path):
    add = tmp_path / "add.csv"
    add.write_text("card_no\n2482000000000000099\n")
    rem = tmp_path / "rem.csv"
    rem.write_text("card_no\n3104991585000011383\n")
    out = tmp_path / "d.bin"
    rc = pc.main([
        "--delta-base", "1", "--add", str(add), "--remove", str(rem),
        "--fares", versioned(tmp_path, 2),
        "--key-hex", KEY.hex(), "-o", str(out), "--quiet", "--activation", "100",
    ])  # fmt: skip
    assert rc == 0
    raw = out.read_bytes()
    hdr = bundle.verify_bytes(raw, KEY)
    assert bundle.read_delta(bundle.open_bytes(raw), hdr) == (
        1, [2482000000000000099], [3104991585000011383],
    )  # fmt: skip
    assert hdr.activation == 100


def test_version_is_set_in_the_toml_only(tmp_path, capsys):
    out = tmp_path / "v.bin"
    out.write_bytes(b"the bundle already there")
    rc = pc.main(["--key-hex", "00", "-o", str(out), "--quiet", "--version", "2"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "--version 2, but" in err and "says version = 1" in err and "[bundle] version" in err
    assert out.read_bytes() == b"the bundle already there", "nothing written on a refusal"
    assert pc.main(["--key-hex", "00", "-o", str(out), "--quiet", "--version", "1"]) == 0
    assert bundle.verify_bytes(out.read_bytes(), b"\x00").version == 1


def _compile_err(tmp_path, capsys, *extra):
    rc = pc.main(["--key-hex", "00", "-o", str(tmp_path / "x.bin"), "--quiet", *extra])
    err = capsys.readouterr().err
    assert rc == 2
    assert not (tmp_path / "x.bin").exists()
    return err


def test_compiler_errors_name_the_problem(tmp_path, capsys):
    bad_csv = tmp_path / "bl.csv"
    bad_csv.write_text("card_no\n3104991585000011383\n31049915850000113X3\n")
    assert "bl.csv line 3" in _compile_err(tmp_path, capsys, "--blacklist", str(bad_csv))
    bad_csv.write_text("number\n1\n")
    assert "card_no" in _compile_err(tmp_path, capsys, "--blacklist", str(bad_csv))
    bad_csv.write_text("card_no\n12345678901234567890\n")
    assert "out of range" in _compile_err(tmp_path, capsys, "--blacklist", str(bad_csv))
    wl = tmp_path / "wl.csv"
    wl.write_text("issuer,name\n0200290,short\n")
    assert "wl.csv line 2" in _compile_err(tmp_path, capsys, "--whitelist", str(wl))
    toml = tmp_path / "f.toml"
    toml.write_text((EX / "fares.toml").read_text().replace("fare = 200", "fare = -200"))
    assert "fare" in _compile_err(tmp_path, capsys, "--fares", str(toml))
    toml.write_text("[fares\n")
    assert "f.toml" in _compile_err(tmp_path, capsys, "--fares", str(toml))
    toml.write_text((EX / "fares.toml").read_text().replace("version = 1", "version = 0"))
    assert "version" in _compile_err(tmp_path, capsys, "--fares", str(toml))
    assert "not seconds" in _compile_err(tmp_path, capsys, "--activation", "soon")
    many = tmp_path / "many.csv"
    many.write_text("card_no\n" + "".join("%019d\n" % i for i in range(cl.OVERLAY_MAX + 1)))
    err = _compile_err(tmp_path, capsys, "--delta-base", "1", "--add", str(many))
    assert "send a full list" in err
    rc = pc.main(["-o", str(tmp_path / "x.bin"), "--quiet"])
    assert rc == 2 and "secret" in capsys.readouterr().err


def test_fixture_oracle_agrees_with_the_bundle(tmp_path):
    bnd, oracle = pc.build_fixture(count=20000, directory=tmp_path, progress=False)
    raw = bnd.read_bytes()
    hdr = bundle.verify_bytes(raw, pc.FIXTURE_KEY)
    off, length, _ = hdr.section(bundle.BLACKLIST)
    bl = cl.Blacklist(cl.FileBlocks(io.BytesIO(raw), off, length))
    assert bl.count == 20000
    members = set(pc.fixture_cards(20000))
    rows = [line.split(",") for line in oracle.read_text().split()]
    assert sum(int(w) for _, w in rows) == 3000
    for card, want in rows:
        assert bl.contains(int(card)) == (want == "1") == (int(card) in members)
    # cached: a second call does not rebuild
    mtime = bnd.stat().st_mtime_ns
    assert (
        pc.build_fixture(count=20000, directory=tmp_path, progress=False)[0].stat().st_mtime_ns
        == mtime
    )


_DAMAGE_BASE = sorted(random.Random(9).sample(range(10**18), 3000))
_DAMAGE_LIST = cl.blacklist_bytes(_DAMAGE_BASE)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, len(_DAMAGE_LIST) - 1), st.integers(0, 255)),
        min_size=1,
        max_size=20,
    ),
    st.lists(CARD, min_size=1, max_size=20),
)
def test_damaged_list_answers_or_raises_list_error_only(damage, probes):
    data = bytearray(_DAMAGE_LIST)
    for pos, value in damage:
        data[pos] = value
    try:
        bl = cl.Blacklist(cl.FileBlocks(io.BytesIO(bytes(data)), 0, len(data)))
    except cl.ListError:
        return
    for c in probes + _DAMAGE_BASE[:20]:
        try:
            assert bl.contains(c) in (True, False)
        except cl.ListError:
            pass
        assert cl.check_blacklist(bl, c) in (cl.OK, cl.BLACKLISTED, cl.LIST_UNAVAILABLE)


def test_micropython_and_cpython_write_the_same_bytes(tmp_path):
    """The format module is shared: the unix port's build is byte-identical to CPython's, and
    each side verifies what the other signed."""
    import subprocess

    from tests.mpy_plugin import ROOT, micropython_bin

    cards = [3104991585000011383, 17, 2482000000000000017] + [i * 7919 for i in range(300)]
    script = tmp_path / "mk.py"
    script.write_text(
        "import bundle, cardlists, sys\n"
        "cards = %r\n"
        "data = bundle.build(b'k1', 9, 77, None, cardlists.blacklist_bytes(cards), None, 5)\n"
        "sys.stdout.write(data.hex())\n" % cards
    )
    env = dict(os.environ, MICROPYPATH=str(ROOT / "firmware") + ":.frozen")
    out = subprocess.run(
        [micropython_bin(), "-X", "heapsize=4m", str(script)],
        env=env, capture_output=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    mpy = bytes.fromhex(out.decode())
    host = bundle.build(b"k1", 9, 77, None, cl.blacklist_bytes(cards), None, 5)
    assert mpy == host
    assert bundle.verify_bytes(mpy, b"k1").version == 9


def test_a_small_compile_is_quiet_and_help_is_for_users(tmp_path, capsys):
    out = tmp_path / "small.bin"
    assert pc.main([
        "--whitelist", str(EX / "whitelist.csv"), "--blacklist", str(EX / "blacklist.csv"),
        "--key-hex", "00", "-o", str(out),
    ]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert err == "", "no progress bar for a 4-line CSV: %r" % err
    with pytest.raises(SystemExit):
        pc.main(["--help"])
    text = capsys.readouterr().out
    assert "fixture" not in text and "--port" not in text
    assert not re.search(r"\bissues? \d", text), "no issue numbers in --help"
