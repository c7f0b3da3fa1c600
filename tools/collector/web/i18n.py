"""The pages' words in English and Simplified Chinese. The language comes from `?lang=` (kept in
a cookie), else the browser's Accept-Language, else Chinese."""

LANGS = ("zh", "en")
DEFAULT = "zh"

T = {
    "title": ("Validator back office", "验票机后台"),
    "fleet": ("Fleet", "车队"),
    "money": ("Money", "收入"),
    "parameters": ("Parameters", "参数"),
    "login": ("Log in", "登录"),
    "logout": ("Log out", "退出"),
    "user": ("User", "用户名"),
    "password": ("Password", "密码"),
    "bad_login": ("Wrong user name or password.", "用户名或密码错误。"),
    "device": ("Validator", "验票机"),
    "name": ("Name", "名称"),
    "route": ("Route", "线路"),
    "all_routes": ("All routes", "全部线路"),
    "filter": ("Filter", "筛选"),
    "last_contact": ("Last contact", "最后联系"),
    "clock": ("Clock", "时钟"),
    "clock_ok": ("trusted", "可信"),
    "clock_unset": ("untrusted records", "不可信记录"),
    "clock_off": ("off by", "偏差"),
    "skew": ("skew s", "偏差 秒"),
    "held": ("Held (contiguous)", "已收(连续)"),
    "missing": ("Missing", "缺失"),
    "backlog_note": (
        "Backlog: records the back office is still missing below the highest one received. "
        "Validators do not report their own queue (docs/dashboard.md).",
        "积压：后台在已收到的最高序号以下仍缺的记录。"
        "验票机不上报自身队列（见 docs/dashboard.md）。",
    ),
    "firmware": ("Firmware", "固件"),
    "not_reported": ("not reported", "未上报"),
    "params_version": ("Parameters", "参数版本"),
    "blacklist_version": ("Blacklist", "黑名单版本"),
    "faults": ("Faults at last start", "上次启动故障"),
    "reset_cause": ("Last start", "上次启动"),
    "psam": ("PSAM", "PSAM"),
    "none": ("none", "无"),
    "failed": ("failed", "失败"),
    "ok": ("ok", "正常"),
    "devices": ("validators", "台验票机"),
    "history": ("History", "历史"),
    "kind": ("Record", "记录"),
    "time": ("Time", "时间"),
    "detail": ("Detail", "详情"),
    "revenue": ("Revenue", "收入"),
    "revenue_by_day": ("Revenue by day", "每日收入"),
    "revenue_by_route": ("Revenue by route", "按线路收入"),
    "revenue_by_card": ("Revenue by card type", "按卡类收入"),
    "card_type": ("Card type", "卡类"),
    "taps": ("Purchases", "笔数"),
    "amount": ("Amount", "金额"),
    "yuan": ("yuan", "元"),
    "day": ("Day", "日期"),
    "from": ("From", "从"),
    "to": ("to", "至"),
    "show": ("Show", "显示"),
    "total": ("Total", "合计"),
    "exceptions": ("Clearing exceptions", "清分异常"),
    "reasons": ("Reasons", "原因"),
    "card": ("Card", "卡号"),
    "settles": ("Settles", "可清分"),
    "excluded": ("excluded", "已排除"),
    "reported": ("reported", "仅报告"),
    "status": ("Status", "状态"),
    "review": ("Review", "审核"),
    "save": ("Save", "保存"),
    "st_open": ("open", "待处理"),
    "st_accepted": ("accepted", "已确认"),
    "st_written_off": ("written off", "已核销"),
    "st_disputed": ("disputed", "争议中"),
    "unconfirmed": ("Unconfirmed debits", "未确认扣款"),
    "unconfirmed_note": (
        "Debit intents with no outcome held yet: not money until one arrives.",
        "已记录扣款意图但尚无结果：结果到达前不计入收入。",
    ),
    "bundles": ("Published bundles", "已发布参数包"),
    "version": ("Version", "版本"),
    "scope": ("Scope", "范围"),
    "published": ("Published", "发布时间"),
    "size": ("Bytes", "字节"),
    "fleet_wide": ("fleet", "全车队"),
    "groups": ("Groups", "分组"),
    "group": ("Group", "分组"),
    "eligible": ("Eligible", "适用"),
    "holding": ("Holding", "已持有"),
    "waiting": ("Waiting", "等待中"),
    "rollout": ("Rollout", "推送"),
    "rollout_devices": ("Rollout per validator", "各验票机推送状态"),
    "rollout_groups": ("Rollout per group", "各分组推送状态"),
    "offered": ("Has", "持有"),
    "asked": ("Last asked", "最后请求"),
    "forbidden": ("Only an administrator can change this.", "只有管理员可以修改。"),
    "summary_at": ("Summaries include records up to", "汇总包含记录截至"),
    "role": ("Role", "角色"),
    "viewer": ("viewer", "查看者"),
    "operator": ("operator", "操作员"),
    "administrator": ("administrator", "管理员"),
    "none_yet": ("Nothing yet.", "暂无。"),
    "more": ("more not shown", "条未显示"),
}
KINDS = {
    1: ("purchase", "消费"),
    2: ("recovered purchase", "恢复的消费"),
    3: ("refused", "拒绝"),
    4: ("parameters activated", "参数生效"),
    5: ("clock change", "时钟调整"),
    6: ("start", "启动"),
    7: ("journal", "日志"),
    8: ("debit intent", "扣款意图"),
    9: ("debit void", "扣款作废"),
}
REASONS = {
    "tac_bad": ("TAC does not verify", "TAC 校验失败"),
    "tac_nokey": ("no TAC key", "无 TAC 密钥"),
    "tac_missing": ("no TAC", "缺少 TAC"),
    "amount": ("amount above fares", "金额超出票价"),
    "balance": ("balance arithmetic", "余额不符"),
    "date": ("implausible date", "日期不合理"),
    "test": ("test record", "测试记录"),
    "tsn_dup": ("duplicate PSAM serial", "PSAM 流水重复"),
    "atc_dup": ("duplicate card counter", "卡计数器重复"),
    "psam": ("PSAM not this device's", "PSAM 不属于本机"),
    "clock_unset": ("clock not set", "时钟未校准"),
}


def pick(lang):
    return 0 if lang == "en" else 1


def translator(lang):
    i = pick(lang)

    def t(key):
        v = T.get(key)
        return v[i] if v else key

    return t


def name_of(table, key, lang):
    v = table.get(key)
    return v[pick(lang)] if v else str(key)


def choose(query_lang, cookie_lang, accept):
    for v in (query_lang, cookie_lang):
        if v in LANGS:
            return v
    for part in (accept or "").split(","):
        tag = part.split(";")[0].strip().lower()
        if tag.startswith("zh"):
            return "zh"
        if tag.startswith("en"):
            return "en"
    return DEFAULT
