"""What each tap outcome means, for the operator, in English and Chinese.

The passenger's texts are firmware/messages.py; this is the operator's side of the same reason
codes: `make sim`'s operator lines say it, docs/operators.md "Reason codes" tables it (a test
keeps the two the same)."""

# reason -> (English, Chinese)
MEANINGS = {
    "OK": ("sold: the fare was debited", "扣款成功"),
    "OK_LOW": (
        "sold, and the balance left is below `low_balance_fen`",
        "扣款成功, 余额低于提醒值",
    ),
    "ALREADY_PAID": (
        "the same card again within the duplicate-tap window: not charged again",
        "重复刷卡时间内再次刷卡: 不重复扣款",
    ),
    "TAP_AGAIN": (
        "the card left during the sale: the outcome is unknown until it comes back",
        "交易中卡离开: 再次刷卡前结果未知",
    ),
    "INSUFFICIENT": ("the balance does not cover the fare", "余额不足以支付票价"),
    "BLACKLISTED": (
        "the card is on the blacklist (the application may be locked: `lock_blacklisted`)",
        "黑名单卡 (可能已锁卡)",
    ),
    "LOCKED": ("the card's application is locked", "卡应用已锁定"),
    "EXPIRED": ("the card's validity has ended", "卡已过有效期"),
    "NOT_YET_VALID": ("the card's validity has not started", "卡尚未到启用日期"),
    "DISABLED": ("the card's application is not enabled", "卡应用未启用"),
    "NOT_WHITELISTED": (
        "the card's issuer is not on the whitelist (bundle `whitelist`)",
        "发卡机构不在白名单中",
    ),
    "NOT_INTERCONNECTED": (
        "the issuer is on the whitelist but the card is from another city and not marked "
        "interconnected (互联互通 flag); a whitelist refusal, not a fare rule",
        "外地卡未开通互联互通 (白名单拒绝, 非票价规则)",
    ),
    "NOT_TUNION": ("not a transport union (交通联合) card", "非交通联合卡"),
    "NO_ISO_DEP": (
        "a card the reader cannot talk ISO-DEP to (not a transit card)",
        "非ISO-DEP卡 (非交通卡)",
    ),
    "CARD_ERROR": ("the card did not answer as expected: tap again", "读卡异常: 请重刷"),
    "PSAM_ERROR": (
        "the PSAM (security module) failed: the validator is out of service",
        "PSAM安全模块故障: 设备停止服务",
    ),
    "MAC2_FAILED": (
        "the PSAM did not confirm the card's debit (booked with FLAG_MAC2_UNVERIFIED)",
        "PSAM未确认扣款 (记录标记MAC2未验证)",
    ),
    "JOURNAL_FULL": (
        "too many records wait for upload (`journal_full`): taps refused until uploaded",
        "待上传记录过多: 上传前拒绝刷卡",
    ),
    "FARE_CAP": (
        "the fare computed is above `max_fare`: a parameter error",
        "计算票价超过上限: 参数错误",
    ),
    "NO_FARE": (
        "no fare for this route or card type in the active parameters",
        "当前参数中无此线路或卡类型的票价",
    ),
    "MULTIPLE_CARDS": ("more than one card in the field", "感应区内有多张卡"),
    "TAP_OFF_OK": ("a tap-off on a stage or rail route completed the trip", "下车刷卡完成行程"),
    "NO_TIME": (
        "the clock is not trusted and `clock_policy` is `refuse`",
        "时钟不可信且策略为拒绝",
    ),
}
UNKNOWN = ("a reason this table does not know (a newer firmware's)", "未知原因")


def meaning(reason, lang="en"):
    en, zh = MEANINGS.get(reason, UNKNOWN)
    return zh if lang == "zh" else en
