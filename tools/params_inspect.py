"""Show a parameter bundle as a fare table, and what changed since another bundle.

    python -m tools.params_inspect bundle.bin --key-hex 0011...        # fares, rules, lists
    python -m tools.params_inspect new.bin --diff old.bin --key-hex 0011...  # what changed
    python -m tools.params_inspect bundle.bin --lookup 3104991585000011383   # is a card listed
    python -m tools.params_inspect bundle.bin --config                  # the config as JSON

Amounts are in yuan, times in the bundle's local time (its tz_s setting) with the zone, time
rules and transfer rules in words (docs/operators.md "Reading a bundle"). A legacy bundle's MAC
is checked with --key-hex/--key-file (without a key the output says NOT CHECKED); a
fleet-signed bundle's signature is checked by `python -m tools.collector publish`, not here.

Exit status: 0 fine, 1 a bundle refused (MAC, format), 2 usage or file errors.
"""

import argparse
import json
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "firmware") not in sys.path:
    sys.path.insert(0, str(ROOT / "firmware"))

import bundle  # noqa: E402
import cardlists  # noqa: E402
import timeutil  # noqa: E402

from tools import versions  # noqa: E402
from tools.record_sheet import stamp, yuan, zone_name  # noqa: E402

DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")  # the fare engine's 1..7 (ISO)
DAYS_ZH = ("周一", "周二", "周三", "周四", "周五", "周六", "周日")
_lang = ["en"]  # inspect()/diff() set it: "en" or "zh" (中文)
_ZH = {
    'same card again within %s s: "already paid"': '%s秒内同卡再刷: "已刷卡"',
    "warn when %s records wait for upload": "待上传记录达%s条时告警",
    "refuse taps when %s records wait for upload": "待上传记录达%s条时拒绝刷卡",
    "upload every %s s": "每%s秒上传一次",
    "no single fare above %s yuan": "单次票价不超过%s元",
    "local time %s": "本地时间 %s",
    "%d h": "%d小时",
    "%d min": "%d分钟",
    "%d s": "%d秒",
    "every day": "每天",
    " (fare rule %s)": " (票价规则 %s)",
    "route %-5s flat   %s yuan%s": "线路 %-5s 一票制 %s元%s",
    "route %-5s %-6s %d stops in %s stages; by stages crossed %s yuan; a trip ends after %s%s": "线路 %-5s %-6s %d个站点, %s个区段; 按跨越区段数 %s元; 行程%s后结束%s",  # noqa: E501
    "card type %-7s %-14s not accepted": "卡类型 %-7s %-14s 不受理",
    'never "already paid"': "不做重复刷卡判断",
    "already paid within %s s": "%s秒内视为已刷卡",
    "no transfer discount": "无换乘优惠",
    "card type %-7s %-14s pays %s%% (local card) / %s%% (other cities' cards)%s": "卡类型 %-7s %-14s 本地卡付%s%% / 外地卡付%s%%%s",  # noqa: E501
    "%s%% of the fare": "票价的%s%%",
    "a fare of %s yuan": "票价%s元",
    "all routes": "所有线路",
    "routes %s": "线路 %s",
    "all card types": "所有卡类型",
    "card types %s": "卡类型 %s",
    "time rule %s: %s-%s local, %s, %s, %s: %s": "时段规则 %s: 本地时间 %s-%s, %s, %s, %s: %s",
    "%s yuan off": "减%s元",
    "pays %s%%": "付%s%%",
    " and ": "且",
    "no discount": "无优惠",
    "transfer: none": "换乘: 无",
    "metro": "地铁",
    "bus": "公交",
    "industry %s": "行业 %s",
    (
        "transfer: within %s of the %s ride, up to %s transfers; "
        "first %s, later %s; %s rides count%s; %s"
    ): "换乘: %s内 (自%s次乘车起), 最多换乘%s次; 首次%s, 之后%s; %s乘车计入%s; %s",
    "first": "首",
    "previous": "上一",
    ", same route too": ", 同线路也算",
    "other cities' cards too": "外地卡也享受",
    "local cards only": "仅限本地卡",
    "whitelist: local issuers %s, city %s, %d interconnected issuers": "白名单: 本地发卡机构 %s, 城市 %s, 互联互通发卡机构%d个",  # noqa: E501
    "none": "无",
    "rail entry needs a balance of %s yuan": "轨道进站需余额%s元",
    "config: none (the validator keeps its active one)": "配置: 无 (设备保留当前配置)",
    "activation: %s": "启用时间: %s",
    "blacklist delta on version %d: %d cards added, %d removed": "黑名单增量 (基于版本%d): 增加%d张, 删除%d张",  # noqa: E501
    "blacklist: %d cards": "黑名单: %d张卡",
    "fleet signature: NOT CHECKED here (publish checks it)": "车队签名: 此处未校验 (发布时校验)",
    "MAC: ok": "MAC: 校验通过",
    "MAC: NOT CHECKED (no key given)": "MAC: 未校验 (未提供密钥)",
    "version: %d": "版本: %d",
    "created: %s": "生成时间: %s",
    "length: %d bytes": "长度: %d字节",
    "lookup %s: no full blacklist in this bundle": "查询 %s: 本参数包无完整黑名单",
    "lookup %s: %s (%d blocks read)": "查询 %s: %s (读取%d块)",
    "LISTED": "在黑名单中",
    "not listed": "不在黑名单中",
    "changes from version %d to version %d": "从版本%d到版本%d的变化",
    "  new: %s; old: %s": "  新: %s; 旧: %s",
    "  NOTE: version %d is not above %d: validators holding %d refuse it": "  注意: 版本%d不高于%d: 持有版本%d的设备会拒绝它",  # noqa: E501
    "%d changes": "%d处变化",
    "no changes in fares, rules, settings or lists": "票价、规则、设置和名单均无变化",
    "Settings": "设置",
    "Whitelist": "白名单",
    "Routes (fares in yuan)": "线路 (票价单位: 元)",
    "Card types (the share of the fare a card pays)": "卡类型 (按票价比例付费)",
    "Time rules": "时段规则",
    "Transfer": "换乘",
    "Blacklist": "黑名单",
    "flat": "一票制",
    "stage": "分段",
    "rail": "轨道",
    "  %d bytes, %d blocks of 4096, %.3f bytes/card, k=%d": "  %d字节, %d块(每块4096字节), 每卡%.3f字节, k=%d",  # noqa: E501
}


def _t(text):
    """The Chinese of an English template when the output is Chinese."""
    return _ZH.get(text, text) if _lang[0] == "zh" else text


SETTING_WORDS = {
    "dup_tap_s": 'same card again within %s s: "already paid"',
    "journal_warn": "warn when %s records wait for upload",
    "journal_full": "refuse taps when %s records wait for upload",
    "upload_interval_s": "upload every %s s",
    "max_fare": "no single fare above %s yuan",
    "tz_s": "local time %s",
}


def _when(secs, tz):
    return "%s %s (%s)" % (stamp(secs, tz), zone_name(tz), stamp(secs, utc=True))


def _money(v):
    return yuan(v) if isinstance(v, int) and not isinstance(v, bool) else repr(v)


def _duration(s):
    if not isinstance(s, int):
        return repr(s)
    if s % 3600 == 0 and s:
        return _t("%d h") % (s // 3600)
    if s % 60 == 0 and s:
        return _t("%d min") % (s // 60)
    return _t("%d s") % s


def _days(days):
    names = DAYS_ZH if _lang[0] == "zh" else DAYS
    if days is None:
        return _t("every day")
    try:
        ds = sorted(set(days))
        if ds == list(range(ds[0], ds[-1] + 1)) and len(ds) > 2:
            return "%s-%s" % (names[ds[0] - 1], names[ds[-1] - 1])
        return ",".join(names[d - 1] for d in ds)
    except (TypeError, IndexError):
        return "days %r" % (days,)


def _setting(name, value):
    if name == "max_fare":
        value = _money(value)
    elif name == "tz_s" and isinstance(value, int):
        value = zone_name(value)
    words = SETTING_WORDS.get(name)
    words = _t(words) if words else None
    return words % value if words else "%s = %r" % (name, value)


def _route(num, r):
    if not isinstance(r, dict):
        return "route %s: %r" % (num, r)
    mode = r.get("mode", "flat")
    rule = _t(" (fare rule %s)") % r["rule"] if r.get("rule") else ""
    if mode == "flat":
        return _t("route %-5s flat   %s yuan%s") % (num, _money(r.get("fare")), rule)
    fares = r.get("fares") or []
    stages = r.get("stages") or []
    try:
        n_stages = len(set(stages))
    except TypeError:
        n_stages = "?"
    steps = ", ".join(
        "%d%s: %s" % (i, "+" if i == len(fares) - 1 else "", _money(f))
        for i, f in enumerate(fares)
    )
    return _t(
        "route %-5s %-6s %d stops in %s stages; by stages crossed %s yuan; a trip ends after %s%s"
    ) % (
        num,
        _t(mode),
        len(stages),
        n_stages,
        steps,
        _duration(r.get("max_trip_s", 7200)),
        rule,
    )


def _card_type(key, c):
    if not isinstance(c, dict):
        return "card type %s: %r" % (key, c)
    name = c.get("name", key)
    if c.get("accept", True) is False:
        return _t("card type %-7s %-14s not accepted") % (key, name)
    extra = []
    if c.get("dup_tap_s") == 0:
        extra.append(_t('never "already paid"'))
    elif "dup_tap_s" in c:
        extra.append(_t("already paid within %s s") % c["dup_tap_s"])
    if c.get("transfer", True) is False:
        extra.append(_t("no transfer discount"))
    return _t("card type %-7s %-14s pays %s%% (local card) / %s%% (other cities' cards)%s") % (
        key,
        name,
        c.get("local_pct", 100),
        c.get("nonlocal_pct", 100),
        "; " + ", ".join(extra) if extra else "",
    )


def _time_rule(t):
    if not isinstance(t, dict):
        return "time rule: %r" % (t,)
    what = (
        _t("%s%% of the fare") % t["pct"]
        if "pct" in t
        else _t("a fare of %s yuan") % _money(t.get("fare"))
    )
    routes = _t("all routes") if t.get("routes") is None else _t("routes %s") % t["routes"]
    types = (
        _t("all card types")
        if t.get("card_types") is None
        else _t("card types %s") % t["card_types"]
    )
    return _t("time rule %s: %s-%s local, %s, %s, %s: %s") % (
        t.get("id"),
        t.get("start"),
        t.get("end"),
        _days(t.get("days")),
        routes,
        types,
        what,
    )


def _off(amount, pct):
    parts = []
    if amount:
        parts.append(_t("%s yuan off") % _money(amount))
    if pct is not None and pct != 100:
        parts.append(_t("pays %s%%") % pct)
    return _t(" and ").join(parts) or _t("no discount")


def _transfer(tr):
    if tr is None:
        return _t("transfer: none")
    if not isinstance(tr, dict):
        return "transfer: %r" % (tr,)
    inds = {1: _t("metro"), 2: _t("bus")}
    rides = tr.get("industries", [1, 2])
    try:
        rides = (
            _t(" and ").replace("且", "、").join(inds.get(i, _t("industry %s") % i) for i in rides)
        )
    except TypeError:
        rides = repr(rides)
    return _t(
        "transfer: within %s of the %s ride, up to %s transfers; "
        "first %s, later %s; %s rides count%s; %s"
    ) % (
        _duration(tr.get("window_s")),
        _t("first") if tr.get("from") == "first" else _t("previous"),
        tr.get("max_count", 1),
        _off(tr.get("first_off", 0), tr.get("first_pct")),
        _off(tr.get("later_off", 0), tr.get("later_pct")),
        rides,
        _t(", same route too") if tr.get("same_route") else "",
        _t("other cities' cards too") if tr.get("nonlocal", True) else _t("local cards only"),
    )


def _sort_key(k):
    return (0, int(k), "") if str(k).isdigit() else (1, 0, str(k))


def describe_config(cfg):
    """[(key, line)] for a bundle's config: one line per setting, route, card type, rule."""
    out = []
    settings = cfg.get("settings", {})
    if isinstance(settings, dict):
        for name in sorted(settings):
            out.append((("setting", name), _setting(name, settings[name])))
    wl = cfg.get("whitelist", {})
    if isinstance(wl, dict):
        out.append(
            (
                ("whitelist",),
                _t("whitelist: local issuers %s, city %s, %d interconnected issuers")
                % (
                    ",".join(map(str, wl.get("local_issuers", []))) or _t("none"),
                    wl.get("local_city"),
                    len(wl.get("issuers", [])),
                ),
            )
        )
    fares = cfg.get("fares", {})
    if not isinstance(fares, dict):
        return out + [(("fares",), "fares: %r" % (fares,))]
    routes = fares.get("routes", {})
    if isinstance(routes, dict):
        for num in sorted(routes, key=_sort_key):
            out.append((("route", str(num)), _route(num, routes[num])))
    if "rail_max_fare" in fares:
        out.append(
            (
                ("rail_max_fare",),
                _t("rail entry needs a balance of %s yuan") % _money(fares["rail_max_fare"]),
            )
        )
    types = fares.get("card_types", {})
    if isinstance(types, dict):
        for key in sorted(types, key=_sort_key):
            out.append((("card type", str(key)), _card_type(key, types[key])))
    rules = fares.get("time_rules", [])
    for i, t in enumerate(rules if isinstance(rules, list) else [rules]):
        rid = t.get("id", "#%d" % i) if isinstance(t, dict) else "#%d" % i
        out.append((("time rule", str(rid)), _time_rule(t)))
    out.append((("transfer",), _transfer(fares.get("transfer"))))
    return out


def _is_signed(f):
    f.seek(0)
    return f.read(4) == bundle.MMAGIC


def open_bundle(f, size, key=None):
    """(Header, how the bundle was checked). Raises bundle.BundleError if refused."""
    if _is_signed(f):
        return bundle.file_header(f, size), _t(
            "fleet signature: NOT CHECKED here (publish checks it)"
        )
    if key is not None:
        return bundle.verify_file(f, key, size), _t("MAC: ok")
    f.seek(0)
    head = f.read(bundle.HEADER)
    if head[:4] != bundle.MAGIC:
        raise bundle.BundleError("not a bundle (it starts %r)" % head[:4])
    if len(head) < bundle.HEADER or struct.unpack_from(">I", head, 20)[0] != size:
        raise bundle.BundleError("truncated or padded")
    return bundle._parse_header(head, size), _t("MAC: NOT CHECKED (no key given)")


def describe(f, size, key=None):
    """(Header, checked line, [(key, line)]) of a whole bundle."""
    hdr, checked = open_bundle(f, size, key)
    cfg = bundle.read_config(f, hdr)
    tz = timeutil.DEFAULT_TZ_SECONDS
    items = []
    if cfg is None:
        items.append((("config",), _t("config: none (the validator keeps its active one)")))
    else:
        s = cfg.get("settings", {})
        if isinstance(s, dict) and isinstance(s.get("tz_s"), int):
            tz = s["tz_s"]
        items.extend(describe_config(cfg))
    items.insert(0, (("activation",), _t("activation: %s") % _when(hdr.activation, tz)))
    delta = bundle.read_delta(f, hdr)
    if delta is not None:
        items.append(
            (
                ("blacklist",),
                _t("blacklist delta on version %d: %d cards added, %d removed")
                % (delta[0], len(delta[1]), len(delta[2])),
            )
        )
    sec = hdr.section(bundle.BLACKLIST)
    bl = None
    if sec is not None:
        bl = cardlists.Blacklist(cardlists.FileBlocks(f, sec[0], sec[1]))
        items.append((("blacklist",), _t("blacklist: %d cards") % bl.count))
    return hdr, checked, items, bl, tz, sec


SECTIONS = (
    ("Settings", ("setting",)),
    ("Whitelist", ("whitelist",)),
    ("Routes (fares in yuan)", ("route", "rail_max_fare")),
    ("Card types (the share of the fare a card pays)", ("card type",)),
    ("Time rules", ("time rule",)),
    ("Transfer", ("transfer",)),
    ("Blacklist", ("blacklist",)),
)


def inspect(f, size, key=None, lookups=(), out=print, lang="en"):
    """Describe the bundle in `f`; returns the Header. Raises bundle.BundleError if refused."""
    _lang[0] = lang
    hdr, checked, items, bl, tz, sec = describe(f, size, key)
    out(checked)
    out(_t("version: %d") % hdr.version)
    out(_t("activation: %s") % _when(hdr.activation, tz))
    out(_t("created: %s") % _when(hdr.created, tz))
    out(_t("length: %d bytes") % hdr.total_len)
    by = {}
    for k, line in items:
        by.setdefault(k[0], []).append(line)
    if "config" in by:
        out(by["config"][0])
    for title, kinds in SECTIONS:
        lines = [x for k in kinds for x in by.get(k, [])]
        if lines:
            out(_t(title))
            for x in lines:
                out("  " + x)
    if bl is not None:
        per = sec[1] / bl.count if bl.count else 0.0
        out(
            _t("  %d bytes, %d blocks of 4096, %.3f bytes/card, k=%d")
            % (sec[1], bl.blocks, per, bl.k)
        )
    for card in lookups:
        if bl is None:
            out(_t("lookup %s: no full blacklist in this bundle") % card)
            continue
        dev = cardlists.CountingBlocks(bl.dev)
        bl.dev = dev
        try:
            hit = bl.contains(card)
        except cardlists.ListError as e:
            out("lookup %s: %s" % (card, e))
            continue
        out(
            _t("lookup %s: %s (%d blocks read)")
            % (card, _t("LISTED") if hit else _t("not listed"), dev.reads)
        )
    return hdr


def diff(new, old, out=print):
    """Print what changed from `old` to `new` (each (Header, checked, items, ...) of
    describe(), made in the language wanted); returns the number of changes."""
    (nh, nchk, nitems), (oh, ochk, oitems) = new[:3], old[:3]
    out(_t("changes from version %d to version %d") % (oh.version, nh.version))
    out(_t("  new: %s; old: %s") % (nchk, ochk))
    if nh.version <= oh.version:
        out(
            _t("  NOTE: version %d is not above %d: validators holding %d refuse it")
            % (nh.version, oh.version, oh.version)
        )
    o = dict(oitems)
    n = dict(nitems)
    changes = 0
    for k, line in nitems:
        if k not in o:
            out("+ " + line)
            changes += 1
        elif o[k] != line:
            out("~ " + o[k])
            out("  -> " + line)
            changes += 1
    for k, line in oitems:
        if k not in n:
            out("- " + line)
            changes += 1
    out(
        _t("%d changes") % changes
        if changes
        else _t("no changes in fares, rules, settings or lists")
    )
    return changes


def _read_key(args):
    if args.key_hex:
        return bytes.fromhex(args.key_hex)
    if args.key_file:
        return Path(args.key_file).read_bytes().strip()
    return None


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python -m tools.params_inspect",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("bundle", help="the bundle file (params_compile's output)")
    ap.add_argument("--key-hex", help="the legacy bundle MAC key as hex (checks the MAC)")
    ap.add_argument("--key-file", help="file holding the legacy bundle MAC key")
    ap.add_argument("--diff", metavar="OLD", help="show what changed since this older bundle")
    ap.add_argument("--lookup", action="append", default=[], help="card number to look up")
    ap.add_argument("--config", action="store_true", help="print the config section as JSON")
    ap.add_argument("--lang", choices=("en", "zh"), default="en", help="words: en or zh (中文)")
    versions.add_flag(ap)  # the version set (tools/versions.py)
    args = ap.parse_args(argv)
    _lang[0] = args.lang
    name = args.bundle
    try:
        key = _read_key(args)
        if args.config:
            path = Path(args.bundle)
            with open(path, "rb") as f:
                hdr, _ = open_bundle(f, path.stat().st_size, key)
                print(json.dumps(bundle.read_config(f, hdr), indent=2, sort_keys=True))
            return 0
        if args.diff:
            descs = []
            for name in (args.bundle, args.diff):
                path = Path(name)
                with open(path, "rb") as f:
                    descs.append(describe(f, path.stat().st_size, key))
            diff(descs[0], descs[1])
            return 0
        path = Path(args.bundle)
        with open(path, "rb") as f:
            inspect(f, path.stat().st_size, key, args.lookup, lang=args.lang)
    except bundle.BundleError as e:
        print("params_inspect: %s refused: %s" % (name, e), file=sys.stderr)
        return 1
    except cardlists.ListError as e:
        print("params_inspect: %s: blacklist unreadable: %s" % (name, e), file=sys.stderr)
        return 1
    except (OSError, ValueError) as e:
        print("params_inspect: error: %s" % e, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
