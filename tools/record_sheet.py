"""Transaction records as a person reads them: one row per record, ready for a spreadsheet.

Shared by `tools/journal_decode.py --csv` (a journal pulled off a validator) and
`python -m tools.collector export --sheet` (the back office's records), so both give the same
columns (docs/operators.md "Reading the records"):

- the kind and the reason in words (English or Chinese), never a bare number;
- the time twice: local time with its zone, and UTC;
- amounts in yuan ("2.00"), never fen;
- the card number as digits grouped by four ("3104 9915 ..."), which a spreadsheet keeps as text
  (a bare 20-digit number loses its leading zero and its last digits);
- route and stop;
- columns that mean one thing for every kind: the parameter version of a PARAM_ACTIVATION is in
  `param_version`, not in `balance_after` where the record carries it (docs/record-format.md).

The local zone of a sale is the one the validator recorded in it (`reason`, record.tz_of); every
other record is shown in the zone given (`tz_seconds`, default the zone of the newest sale seen,
else UTC+8, the validator's default).
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "firmware") not in sys.path:
    sys.path.insert(0, str(ROOT / "firmware"))

import bootmode  # noqa: E402
import record  # noqa: E402
import timeutil  # noqa: E402

DEFAULT_TZ = timeutil.DEFAULT_TZ_SECONDS
SALE_KINDS = (record.PURCHASE, record.PURCHASE_RECOVERED, record.DEBIT_INTENT)

# kind -> (English, Chinese)
KIND_WORDS = {
    record.PURCHASE: ("purchase", "消费"),
    record.PURCHASE_RECOVERED: ("purchase recovered", "补记消费"),
    record.REFUSED: ("refused", "拒绝"),
    record.PARAM_ACTIVATION: ("parameters activated", "参数启用"),
    record.CLOCK_CHANGE: ("clock change", "时钟调整"),
    record.BOOT: ("start", "开机"),
    record.JOURNAL_EVENT: ("journal note", "日志事件"),
    record.DEBIT_INTENT: ("debit intent", "扣款意向"),
    record.DEBIT_VOID: ("debit void", "扣款作废"),
}
# REFUSED records' reason byte (record.REASON_*)
REFUSAL_WORDS = {
    record.REASON_BLACKLIST: ("card on the blacklist", "黑名单卡"),
    record.REASON_LOCKED: ("card application locked", "卡已锁定"),
    record.REASON_EXPIRED: ("card expired", "卡已过期"),
    record.REASON_NOT_WHITELISTED: ("issuer not on the whitelist", "非互通卡"),
    record.REASON_INSUFFICIENT: ("balance too low", "余额不足"),
    record.REASON_NOT_ENABLED: ("card not enabled", "卡未启用"),
    record.REASON_OTHER: ("other", "其他"),
}
# DEBIT_VOID records' reason byte (purchase.VOID_*)
VOID_WORDS = {
    1: ("card refused DEBIT: MAC1 (9302)", "卡拒绝扣款: MAC1错误"),
    2: ("card refused DEBIT: balance (9401)", "卡拒绝扣款: 余额不足"),
    3: ("card refused DEBIT: other status", "卡拒绝扣款: 其他"),
    4: ("card history holds no such debit", "卡内无此扣款记录"),
}
# CLOCK_CHANGE source (timetrust.SOURCES index; + 0x80 = proposed, not adopted)
CLOCK_SOURCE_WORDS = (
    ("none", "无"),
    ("last known time", "上次时间"),
    ("RTC chip", "时钟芯片"),
    ("kept across a reset", "重启保留"),
    ("network", "网络"),
    ("back office", "后台"),
    ("agreed", "多源一致"),
)
CAUSE_ZH = {
    "other": "其他",
    "power-on": "上电",
    "hard": "硬复位",
    "watchdog": "看门狗",
    "deepsleep": "深度睡眠",
    "soft": "软复位",
    "brownout": "欠压",
}
FLAG_WORDS = (
    (record.FLAG_MAC2_UNVERIFIED, ("MAC2 not verified", "MAC2未验证")),
    (record.FLAG_TAC_MISSING, ("no TAC", "无TAC")),
    (record.FLAG_CLOCK_UNSET, ("clock not set", "时钟未校准")),
    (record.FLAG_TEST, ("test record", "测试记录")),
    (record.FLAG_APP_LOCKED, ("card locked by this tap", "本次锁卡")),
)

# (column key, English header, Chinese header)
COLUMNS = (
    ("device", "device", "设备"),
    ("seq", "seq", "流水号"),
    ("kind", "kind", "类型"),
    ("local_time", "local time", "本地时间"),
    ("zone", "zone", "时区"),
    ("utc_time", "UTC time", "UTC时间"),
    ("card_no", "card number", "卡号"),
    ("amount_yuan", "amount (yuan)", "金额(元)"),
    ("balance_before_yuan", "balance before (yuan)", "交易前余额(元)"),
    ("balance_after_yuan", "balance after (yuan)", "交易后余额(元)"),
    ("discount_yuan", "discount (yuan)", "优惠(元)"),
    ("route", "route", "线路"),
    ("stop", "stop", "站点"),
    ("reason", "reason", "原因"),
    ("flags", "flags", "标记"),
    ("card_type", "card type", "卡类型"),
    ("card_counter", "card counter", "卡计数器"),
    ("psam_tid", "PSAM terminal", "PSAM终端号"),
    ("psam_tsn", "PSAM serial (TSN)", "PSAM流水号"),
    ("tac", "TAC", "TAC"),
    ("param_version", "parameter version", "参数版本"),
    ("blacklist_version", "blacklist version", "黑名单版本"),
    ("clock_other", "clock: time before / proposed", "调整前/建议时间"),
    ("received", "received (local)", "接收时间(本地)"),
    ("tac_status", "TAC check", "TAC校验"),
    ("exceptions", "back-office exceptions", "后台异常"),
)


def _w(pair, lang):
    return pair[1] if lang == "zh" else pair[0]


def yuan(fen):
    """Fen -> "12.34" (exact, no float)."""
    sign = "-" if fen < 0 else ""
    fen = abs(fen)
    return "%s%d.%02d" % (sign, fen // 100, fen % 100)


def zone_name(tz_seconds):
    sign = "+" if tz_seconds >= 0 else "-"
    m = abs(tz_seconds) // 60
    return "UTC%s%02d:%02d" % (sign, m // 60, m % 60)


def parse_tz(text):
    """ "+08:00", "8", "-5", "UTC+05:30", "+0530" -> seconds; ValueError with the reason."""
    t = text.strip().upper()
    if t.startswith("UTC"):
        t = t[3:]
    if t in ("", "Z"):
        return 0
    sign = -1 if t.startswith("-") else 1
    t = t.lstrip("+-")
    try:
        if ":" in t:
            h, m = t.split(":", 1)
            secs = int(h) * 3600 + int(m) * 60
        elif len(t) == 4 and t.isdigit():
            secs = int(t[:2]) * 3600 + int(t[2:]) * 60
        else:
            secs = int(t) * 3600
    except ValueError:
        raise ValueError("time zone %r: want an offset such as +08:00" % text) from None
    secs *= sign
    if secs % 900 or not -12 * 3600 <= secs <= 14 * 3600:
        raise ValueError("time zone %r: not a UTC offset in quarter hours" % text)
    return secs


def stamp(secs2000, tz_seconds=0, utc=False):
    y, mo, d, h, mi, s = timeutil.from_seconds(secs2000 + (0 if utc else tz_seconds))
    if utc:
        return "%04d-%02d-%02dT%02d:%02d:%02dZ" % (y, mo, d, h, mi, s)
    return "%04d-%02d-%02d %02d:%02d:%02d" % (y, mo, d, h, mi, s)


def local_iso(secs2000, tz_seconds=DEFAULT_TZ):
    """Seconds since 2000 -> '2026-12-31T06:20:00+08:00' (one token: local time and its zone)."""
    if secs2000 is None:
        return "-"
    z = zone_name(tz_seconds)[3:]
    return stamp(secs2000, tz_seconds).replace(" ", "T") + z


def card_text(raw):
    """Packed BCD card number -> digits grouped by four (padding F nibbles dropped)."""
    digits = raw.hex().rstrip("f")
    if not digits.strip("0"):
        return ""
    return " ".join(digits[i : i + 4] for i in range(0, len(digits), 4))


def sale_tz(d):
    """The UTC offset a sale recorded, or None (not a sale, or not recorded)."""
    if d["kind"] in SALE_KINDS:
        return record.tz_of(d["reason"])
    return None


def guess_tz(records, default=DEFAULT_TZ):
    """The zone of the newest sale among `records` (decoded dicts), else `default`."""
    for d in reversed(list(records)):
        tz = sale_tz(d)
        if tz is not None:
            return tz
    return default


def reason_words(d, lang="en"):
    kind, r = d["kind"], d["reason"]
    if kind == record.REFUSED:
        return _w(REFUSAL_WORDS.get(r, ("code %d" % r, "代码%d" % r)), lang)
    if kind == record.DEBIT_VOID:
        return _w(VOID_WORDS.get(r, ("code %d" % r, "代码%d" % r)), lang)
    if kind == record.CLOCK_CHANGE:
        src = r & 0x7F
        words = _w(CLOCK_SOURCE_WORDS[src], lang) if src < len(CLOCK_SOURCE_WORDS) else str(src)
        if r & 0x80:
            return ("%s (proposed, not adopted)" if lang == "en" else "%s(未采用)") % words
        return words
    if kind == record.BOOT:
        info = bootmode.boot_info(d)
        cause = info["reset_cause"]
        if lang == "zh":
            cause = CAUSE_ZH.get(cause, cause)
        parts = ["reset: %s" % cause if lang == "en" else "复位: %s" % cause]
        if info["faults"]:
            parts.append(("failed: %s" if lang == "en" else "故障: %s") % ",".join(info["faults"]))
        if info["unconfirmed"]:
            n = info["unconfirmed"]
            parts.append(("%d unconfirmed debits" if lang == "en" else "未确认扣款%d笔") % n)
        return "; ".join(parts)
    return ""


def flag_words(flags, kind, lang="en"):
    if kind == record.BOOT:  # flags 0x01 of a BOOT: the PSAM did not start
        return ("PSAM not ready" if lang == "en" else "PSAM未就绪") if flags & 1 else ""
    out = [_w(words, lang) for bit, words in FLAG_WORDS if flags & bit]
    rest = flags & ~sum(bit for bit, _ in FLAG_WORDS)
    if rest:
        out.append("0x%02x" % rest)
    return ", ".join(out)


def row(
    d, tz_seconds=DEFAULT_TZ, lang="en", device="", received=None, tac_status="", exceptions=""
):
    """One decoded record (record.decode) -> {column key: text}. `received`: Unix seconds."""
    kind = d["kind"]
    tz = sale_tz(d)
    if tz is None:
        tz = tz_seconds
    sale = kind in SALE_KINDS or kind == record.DEBIT_VOID
    out = dict.fromkeys((c[0] for c in COLUMNS), "")
    out.update(
        device=str(device),
        seq=str(d["seq"]),
        kind=_w(KIND_WORDS.get(kind, (record.kind_name(kind), record.kind_name(kind))), lang),
        local_time=stamp(d["time"], tz),
        zone=zone_name(tz),
        utc_time=stamp(d["time"], utc=True),
        reason=reason_words(d, lang),
        flags=flag_words(d["flags"], kind, lang),
        tac_status=tac_status or "",
        exceptions=exceptions or "",
    )
    if kind == record.REFUSED:  # a refusal debits nothing: no amounts, no PSAM serial
        out.update(
            card_no=card_text(d["card_no"]),
            route=str(d["route"]),
            stop=str(d["stop"]),
            card_type=str(d["card_type"]),
        )
    elif sale:
        out.update(
            card_no=card_text(d["card_no"]),
            amount_yuan=yuan(d["amount"]),
            balance_before_yuan=yuan(d["balance_before"]),
            balance_after_yuan=yuan(d["balance_after"]),
            discount_yuan=yuan(d["discount"]),
            route=str(d["route"]),
            stop=str(d["stop"]),
            card_type=str(d["card_type"]),
            card_counter=str(d["card_atc"]),
            psam_tid=d["psam_tid"].hex(),
            psam_tsn=str(d["psam_serial"]),
        )
        if kind in (record.PURCHASE, record.PURCHASE_RECOVERED):
            out["tac"] = d["tac"].hex()
    elif kind == record.PARAM_ACTIVATION:
        out.update(param_version=str(d["psam_serial"]), blacklist_version=str(d["balance_after"]))
    elif kind == record.CLOCK_CHANGE:
        out["clock_other"] = "%s %s" % (stamp(d["psam_serial"], tz), zone_name(tz))
    elif kind == record.BOOT:
        if d["psam_tid"] != bytes(6):
            out["psam_tid"] = d["psam_tid"].hex()
    if received is not None:
        out["received"] = stamp(received - timeutil.EPOCH_OFFSET_UNIX, tz)
    return out


def header(lang="en", keys=None):
    keys = keys or [c[0] for c in COLUMNS]
    names = {c[0]: (c[2] if lang == "zh" else c[1]) for c in COLUMNS}
    return [names[k] for k in keys]


def write_export(rows, names, out, tz_seconds=None, lang="en"):
    """The collector's records (tuples named by `names`, Store.EXPORT_COLUMNS: device_id,
    received (Unix seconds), tac_status and raw as hex among them) -> CSV rows on `out`.

    A record without a zone of its own takes the zone of its device's last sale before it, else
    `tz_seconds`, else UTC+8. Returns the number of rows written."""
    import csv

    at = {n: i for i, n in enumerate(names)}
    w = csv.writer(out)
    w.writerow(header(lang))
    keys = [c[0] for c in COLUMNS]
    n = 0
    zones = {}
    for r in rows:
        dev = r[at["device_id"]]
        d = record.decode(bytes.fromhex(r[at["raw"]]))
        own = sale_tz(d)
        if own is not None:
            zones[dev] = own
        tz = zones.get(dev, DEFAULT_TZ if tz_seconds is None else tz_seconds)
        line = row(d, tz, lang, dev, r[at["received"]], r[at["tac_status"]], r[at["exceptions"]])
        w.writerow([line[k] for k in keys])
        n += 1
    return n
