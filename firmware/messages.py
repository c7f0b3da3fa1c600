# What the passenger reads for each tap outcome, in Chinese and English, and how it sounds.
# Keys are the purchase's reason codes (firmware/purchase.py) plus the application's own
# outcomes. Every Chinese character used here must be in firmware/font_zh16.py: regenerate it with
# `python -m tools.fontgen` after changing a text (a test checks this).

# tone: "ok", "ok_low" (accepted, low balance), "refused", "again" (tap again), "paid"
# reason -> (Chinese line, English line, tone)
TEXTS = {
    "OK": ("扣款成功", "Paid", "ok"),
    "OK_LOW": ("余额低请充值", "Low balance", "ok_low"),
    "ALREADY_PAID": ("已刷卡", "Already paid", "paid"),
    "TAP_AGAIN": ("请重新刷卡", "Tap again", "again"),
    "INSUFFICIENT": ("余额不足", "Balance too low", "refused"),
    "BLACKLISTED": ("黑名单卡", "Card blocked", "refused"),
    "LOCKED": ("卡已锁定", "Card locked", "refused"),
    "EXPIRED": ("卡已过期", "Card expired", "refused"),
    "NOT_YET_VALID": ("卡未启用", "Not yet valid", "refused"),
    "DISABLED": ("卡未启用", "Card not enabled", "refused"),
    "NOT_WHITELISTED": ("非互通卡", "Not accepted here", "refused"),
    "NOT_INTERCONNECTED": ("非互通卡", "Not accepted here", "refused"),
    "NOT_TUNION": ("非交通联合卡", "Not a transit card", "refused"),
    "NO_ISO_DEP": ("无效卡", "Card not supported", "refused"),
    "CARD_ERROR": ("读卡失败请重刷", "Read error, retry", "again"),
    "PSAM_ERROR": ("设备故障", "Out of service", "refused"),
    "MAC2_FAILED": ("交易失败", "Payment failed", "refused"),
    "JOURNAL_FULL": ("设备故障", "Out of service", "refused"),
    "FARE_CAP": ("票价异常", "Fare error", "refused"),
    "NO_FARE": ("无票价", "No fare set", "refused"),
    "MULTIPLE_CARDS": ("请单张刷卡", "One card only", "again"),
    "TAP_OFF_OK": ("下车成功", "Tapped off", "ok"),
    "NO_TIME": ("设备故障", "Clock not set", "refused"),  # clock_policy "refuse" (docs/time.md)
}

UNKNOWN = ("无效卡", "Card refused", "refused")

# Screen furniture.
IDLE_ZH = "请刷卡"
IDLE_EN = "Tap card"
ROUTE_ZH = "线路"
FARE_ZH = "票价"
BALANCE_ZH = "余额"
YUAN_ZH = "元"
FAULT_ZH = "设备故障"  # a part failed to start (firmware/faults.py); English line names it
MAINT_ZH = "设备"  # maintenance at the depot (with "MAINTENANCE"); only glyphs the font has


# A bus company's own wording (config.json "messages", checked by config.validate): reason ->
# (Chinese, English, tone of the built-in text). Empty unless customise() was called.
_custom = {}


def customise(table):
    """Replace the texts of the reasons in `table` ({reason: [zh, en]}); None or {}: built-in."""
    _custom.clear()
    for reason, pair in (table or {}).items():
        _custom[reason] = (pair[0], pair[1], TEXTS[reason][2])


def text_for(reason):
    if _custom:
        t = _custom.get(reason)
        if t is not None:
            return t
    return TEXTS.get(reason, UNKNOWN)


def all_texts():
    """Every string that can reach the display (the font generator and its test use this)."""
    out = [IDLE_ZH, IDLE_EN, ROUTE_ZH, FARE_ZH, BALANCE_ZH, YUAN_ZH, FAULT_ZH, MAINT_ZH]
    for zh, en, _ in TEXTS.values():
        out.append(zh)
        out.append(en)
    out.extend(UNKNOWN[:2])
    return out


def yuan(fen):
    """Amount in fen -> "12.34" (no float: exact for any amount)."""
    sign = "-" if fen < 0 else ""
    fen = abs(fen)
    return "%s%d.%02d" % (sign, fen // 100, fen % 100)
