"""The dashboard's Starlette app: `create_web_app(store)`. Every page needs a session; every POST
its CSRF token; every change an administrator (auth.py). Pages read the summary tables of
rollup.py and indexed lookups only."""

import logging
import time
from pathlib import Path
from urllib.parse import parse_qs, urlencode

import timeutil
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from .. import bundles
from . import auth, charts, i18n, rollup, schema

log = logging.getLogger("collector.web")
HERE = Path(__file__).resolve().parent
EPOCH_2000 = 946684800
PAGE = 200  # rows per table page
TZ = timeutil.DEFAULT_TZ_SECONDS  # the collector's zone: dates and times on the pages
REVIEW = ("open", "accepted", "written_off", "disputed")
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
    "script-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
STATIC = {"style.css": "text/css", "app.js": "text/javascript"}


def when(t, tz=TZ):
    """Validator time (s since 2000 UTC) as local 'YYYY-MM-DD HH:MM' (China time by default)."""
    if t is None:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(t + EPOCH_2000 + tz))


def when_unix(t):
    return when(None if t is None else t - EPOCH_2000)


SKEW_OK = 300  # a validator clock this far from the back office's (s) is shown as off


def off_by(skew):
    """'' for a clock within SKEW_OK of the back office's at its last request, else '-5.2 d'."""
    if skew is None or abs(skew) <= SKEW_OK:
        return ""
    for unit, n in (("d", 86400), ("h", 3600), ("min", 60)):
        if abs(skew) >= n:
            return "%+.1f %s" % (skew / n, unit)
    return "%+d s" % skew


def yuan(fen):
    return "%.2f" % ((fen or 0) / 100)


def mask(card_no, role):
    if card_no is None:
        return "—"
    return card_no if auth.rank(role) >= 1 else card_no[:4] + "…" + card_no[-4:]


class Web:
    def __init__(self, store, roll_every=30.0):
        self.store = store
        schema.ensure(store)
        bundles.ensure(store)
        self.env = Environment(
            loader=FileSystemLoader(str(HERE / "templates")),
            autoescape=select_autoescape(["html"]),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.globals.update(
            when=when, when_unix=when_unix, yuan=yuan, day_text=rollup.day_text
        )
        self.roll_every = roll_every
        self.throttle = auth.Throttle()
        self._rolled = 0.0

    # ---- plumbing ------------------------------------------------------------------------

    def lang(self, request):
        return i18n.choose(
            request.query_params.get("lang"),
            request.cookies.get("tu_lang"),
            request.headers.get("accept-language"),
        )

    def render(self, request, name, user=None, code=200, **ctx):
        lang = self.lang(request)
        t = i18n.translator(lang)
        html = self.env.get_template(name).render(
            t=t,
            lang=lang,
            user=user,
            path=request.url.path,
            query=request.url.query,
            kind_name=lambda k: i18n.name_of(i18n.KINDS, k, lang),
            reason_name=lambda r: i18n.name_of(i18n.REASONS, r, lang),
            card_type_name=lambda c: ("类型 %d" if lang == "zh" else "type %d") % c,
            mask=lambda c: mask(c, user["role"] if user else "viewer"),
            **ctx,
        )
        resp = HTMLResponse(html, status_code=code, headers=HEADERS)
        if request.query_params.get("lang") in i18n.LANGS:
            resp.set_cookie("tu_lang", lang, max_age=365 * 86400, secure=True, samesite="strict")
        return resp

    def user(self, request):
        return auth.session(self.store, request.cookies.get(auth.COOKIE))

    async def form(self, request):
        body = await request.body()
        if len(body) > 16384:
            return None
        return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}

    def roll(self):
        """Summaries brought up to date at most every `roll_every` seconds (a page view pays
        for what arrived since; `python -m tools.collector web` also rolls in the background)."""
        now = time.monotonic()
        if now - self._rolled >= self.roll_every:
            self._rolled = now
            try:
                rollup.rollup(self.store)
            except Exception as e:  # noqa: BLE001  (the database: pages show what is summarised)
                log.exception("rollup failed: %s", e)

    def guard(fn):  # noqa: N805  (a decorator in the class body)
        async def wrapper(self, request):
            user = self.user(request)
            if user is None:
                nxt = request.url.path + ("?" + request.url.query if request.url.query else "")
                return RedirectResponse("/login?" + urlencode({"next": nxt}), 303, headers=HEADERS)
            if request.method == "POST":
                form = await self.form(request)
                if form is None or not auth.same(form.get("csrf"), user["csrf"]):
                    log.warning(
                        "%s: POST %s without a valid CSRF token", user["name"], request.url.path
                    )
                    return PlainTextResponse("CSRF token missing or wrong\n", 403, headers=HEADERS)
                if user["role"] != "administrator":
                    log.warning(
                        "%s (%s): POST %s refused", user["name"], user["role"], request.url.path
                    )
                    return self.render(request, "error.html", user, 403, message="forbidden")
                return await run_in_threadpool(fn, self, request, user, form)
            # The database work off the event loop (a slow query holds no other request).
            return await run_in_threadpool(fn, self, request, user, None)

        return wrapper

    # ---- login -----------------------------------------------------------------------------

    async def login(self, request):
        import secrets

        nxt = request.query_params.get("next", "/fleet")
        if request.method == "GET":
            token = secrets.token_urlsafe(24)
            resp = self.render(request, "login.html", None, login_csrf=token, next=nxt)
            resp.set_cookie(
                auth.LOGIN_COOKIE,
                token,
                max_age=900,
                secure=True,
                httponly=True,
                samesite="strict",
            )
            return resp
        form = await self.form(request) or {}
        if not auth.same(form.get("csrf"), request.cookies.get(auth.LOGIN_COOKIE)):
            return PlainTextResponse("CSRF token missing or wrong\n", 403, headers=HEADERS)
        name = form.get("user", "")
        client = request.client.host if request.client else "?"
        if self.throttle.blocked(name, client):
            log.warning("login for %r from %s refused: too many failures", name[:64], client)
            return PlainTextResponse(
                "too many failed logins: wait %d minutes\n" % (auth.THROTTLE_S // 60),
                429,
                headers=HEADERS,
            )
        # argon2 is slow on purpose: off the event loop.
        role = await run_in_threadpool(
            auth.check_password, self.store, name, form.get("password", "")
        )
        if role is None:
            self.throttle.failed(name, client)
        else:
            self.throttle.clear(name)
        nxt = form.get("next") or "/fleet"
        if not nxt.startswith("/") or nxt.startswith("//"):
            nxt = "/fleet"
        if role is None:
            log.warning(
                "login refused for %r from %s",
                name[:64],
                request.client.host if request.client else "?",
            )
            token = secrets.token_urlsafe(24)
            resp = self.render(
                request, "login.html", None, 401, login_csrf=token, next=nxt, bad=True
            )
            resp.set_cookie(
                auth.LOGIN_COOKIE,
                token,
                max_age=900,
                secure=True,
                httponly=True,
                samesite="strict",
            )
            return resp
        token, _csrf = auth.new_session(self.store, name)
        log.info("%s (%s) logged in", name, role)
        resp = RedirectResponse(nxt, 303, headers=HEADERS)
        resp.set_cookie(
            auth.COOKIE,
            token,
            max_age=auth.SESSION_S,
            secure=True,
            httponly=True,
            samesite="strict",
            path="/",
        )
        resp.delete_cookie(auth.LOGIN_COOKIE)
        return resp

    async def do_logout(self, request):
        user = self.user(request)
        form = await self.form(request) or {}
        if user is None or not auth.same(form.get("csrf"), user["csrf"]):
            return PlainTextResponse("CSRF token missing or wrong\n", 403, headers=HEADERS)
        auth.end_session(self.store, request.cookies.get(auth.COOKIE))
        resp = RedirectResponse("/login", 303, headers=HEADERS)
        resp.delete_cookie(auth.COOKIE, path="/")
        return resp

    # ---- pages ---------------------------------------------------------------------------

    @guard
    def fleet(self, request, user, form):
        self.roll()
        route = request.query_params.get("route", "")
        page = _int(request.query_params.get("page"), 0)
        where, args = "", ()
        if route.isdigit():
            where, args = " WHERE w.route = ?", (int(route),)
        with self.store._tx(write=False) as ex:
            routes = [
                r[0]
                for r in ex.all(
                    "SELECT DISTINCT route FROM web_device WHERE route IS NOT NULL ORDER BY 1"
                )
            ]
            total = ex.one(
                "SELECT COUNT(*) FROM devices d "
                "LEFT JOIN web_device w ON w.device_id = d.device_id" + where,
                args,
            )[0]
            rows = ex.all(
                "SELECT d.device_id, d.name, d.last_seen, d.last_skew, d.contig, "
                "(SELECT MAX(seq) FROM records r WHERE r.device_id = d.device_id), "
                "(SELECT COUNT(*) FROM records r WHERE r.device_id = d.device_id "
                "AND r.seq > d.contig), "
                "w.route, w.clock_unset, w.param_version, w.blacklist_version, w.boot_time, "
                "w.boot_cause, w.faults, w.psam_ok, p.have "
                "FROM devices d LEFT JOIN web_device w ON w.device_id = d.device_id "
                "LEFT JOIN device_params p ON p.device_id = d.device_id"
                + where
                + " ORDER BY d.device_id LIMIT ? OFFSET ?",
                args + (PAGE, page * PAGE),
            )
        devices = []
        for (
            dev,
            name,
            seen,
            skew,
            contig,
            top,
            above,
            rt,
            unset,
            pv,
            bl,
            bt,
            cause,
            faults,
            psam_ok,
            have,
        ) in rows:
            top = top or 0
            devices.append(
                {
                    "id": dev,
                    "name": name,
                    "last_seen": seen,
                    "skew": skew,
                    "skew_off": off_by(skew),
                    "contig": contig,
                    "top": top,
                    "missing": max(0, top - contig - (above or 0)),
                    "route": rt,
                    "clock_unset": unset or 0,
                    "params": pv if pv is not None else have,
                    "blacklist": bl,
                    "boot_time": bt,
                    "cause": cause,
                    "faults": faults.split(",") if faults else [],
                    "psam_ok": psam_ok,
                }
            )
        return self.render(
            request,
            "fleet.html",
            user,
            devices=devices,
            routes=routes,
            route=route,
            total=total,
            page=page,
            pages=(total + PAGE - 1) // PAGE,
        )

    @guard
    def device(self, request, user, form):
        self.roll()
        dev = _int(request.path_params.get("device"), None)
        with self.store._tx(write=False) as ex:
            d = ex.one(
                "SELECT device_id, name, created, last_seen, last_skew, contig, counter "
                "FROM devices WHERE device_id = ?",
                (dev,),
            )
            if d is None:
                return self.render(request, "error.html", user, 404, message="not found")
            w = ex.one(
                "SELECT route, clock_unset, clock_changes, param_version, "
                "blacklist_version, boots, boot_cause, faults, psam_ok, purchases, amount "
                "FROM web_device WHERE device_id = ?",
                (dev,),
            )
            daily = ex.all(
                "SELECT day, SUM(n), SUM(amount) FROM web_daily WHERE device_id = ? "
                "GROUP BY day ORDER BY day DESC LIMIT 60",
                (dev,),
            )
            events = ex.all(
                "SELECT seq, kind, rtime, detail FROM web_events WHERE device_id = ? "
                "ORDER BY seq DESC LIMIT ?",
                (dev, PAGE),
            )
            gaps = ex.all(
                "SELECT from_seq, to_seq, noted FROM gaps WHERE device_id = ? ORDER BY from_seq",
                (dev,),
            )
            psams = [
                r[0] for r in ex.all("SELECT psam_tid FROM psams WHERE device_id = ?", (dev,))
            ]
            groups = [
                r[0]
                for r in ex.all(
                    "SELECT grp FROM device_groups WHERE device_id = ? ORDER BY grp", (dev,)
                )
            ]
            top = ex.one("SELECT MAX(seq) FROM records WHERE device_id = ?", (dev,))[0] or 0
        info = dict(
            zip(
                (
                    "route",
                    "clock_unset",
                    "clock_changes",
                    "params",
                    "blacklist",
                    "boots",
                    "cause",
                    "faults",
                    "psam_ok",
                    "purchases",
                    "amount",
                ),
                w or (None,) * 11,
            )
        )
        daily = list(reversed(daily))
        chart = charts.bars([(rollup.day_text(d)[5:], a / 100) for d, _n, a in daily], "¥")
        return self.render(
            request,
            "device.html",
            user,
            d=dict(zip(("id", "name", "created", "last_seen", "skew", "contig", "counter"), d)),
            info=info,
            daily=daily,
            events=events,
            gaps=gaps,
            psams=psams,
            groups=groups,
            top=top,
            chart=chart,
        )

    @guard
    def money(self, request, user, form):
        self.roll()
        q = request.query_params
        with self.store._tx(write=False) as ex:
            last = ex.one("SELECT MAX(day) FROM web_daily_fleet")[0]
            last = last if last is not None else (int(time.time()) - EPOCH_2000) // 86400
            end = _day(q.get("to"), last)
            start = _day(q.get("from"), end - 29)
            rng = (start, end)
            by_day = ex.all(
                "SELECT day, SUM(n), SUM(amount) FROM web_daily_fleet "
                "WHERE day BETWEEN ? AND ? GROUP BY day ORDER BY day",
                rng,
            )
            by_route = ex.all(
                "SELECT route, SUM(n), SUM(amount) FROM web_daily_fleet "
                "WHERE day BETWEEN ? AND ? GROUP BY route ORDER BY route",
                rng,
            )
            by_card = ex.all(
                "SELECT card_type, SUM(n), SUM(amount) FROM web_daily_fleet "
                "WHERE day BETWEEN ? AND ? GROUP BY card_type ORDER BY card_type",
                rng,
            )
            status = q.get("status", "")
            exc_sql = (
                "SELECT r.device_id, r.seq, r.rtime, r.card_no, r.card_atc, r.amount, "
                "r.exceptions, r.tac_status, v.status, v.by_user, v.note FROM records r "
                "LEFT JOIN web_review v ON v.device_id = r.device_id AND v.seq = r.seq "
                "WHERE r.exceptions IS NOT NULL AND r.kind IN (1, 2) AND r.rtime BETWEEN ? AND ?"
            )
            # The range's local days in validator time (the collector's zone).
            span = (start * 86400 - TZ, (end + 1) * 86400 - TZ - 1)
            args = span
            if status in REVIEW:
                exc_sql += " AND COALESCE(v.status, 'open') = ?"
                args = (status,)
            exc = ex.all(
                exc_sql + " ORDER BY r.rtime DESC, r.device_id, r.seq LIMIT ?", args + (PAGE + 1,)
            )
            counts = ex.all(
                "SELECT exceptions, COUNT(*), SUM(amount) FROM records "
                "WHERE exceptions IS NOT NULL AND kind IN (1, 2) AND rtime BETWEEN ? AND ? "
                "GROUP BY exceptions",
                span,
            )
            opened = ex.all(
                "SELECT device_id, seq, rtime, card_no, card_atc, amount FROM web_open "
                "ORDER BY rtime DESC LIMIT ?",
                (PAGE,),
            )
            n_open = ex.one("SELECT COUNT(*), COALESCE(SUM(amount), 0) FROM web_open")
        reason_counts = {}
        for reasons, n, a in counts:
            for r in reasons.split(","):
                c = reason_counts.setdefault(r, [0, 0])
                c[0] += n
                c[1] += a or 0
        rows = []
        for dev, seq, t, card, atc, amt, reasons, tac, st, by, note in exc[:PAGE]:
            rs = reasons.split(",")
            rows.append(
                {
                    "device": dev,
                    "seq": seq,
                    "time": t,
                    "card": card,
                    "atc": atc,
                    "amount": amt,
                    "reasons": rs,
                    "tac": tac,
                    "status": st or "open",
                    "by": by,
                    "note": note,
                    "settles": not (set(rs) - {"clock_unset"}),
                }
            )
        return self.render(
            request,
            "money.html",
            user,
            start=start,
            end=end,
            by_day=by_day,
            by_route=by_route,
            by_card=by_card,
            total_n=sum(r[1] for r in by_day),
            total_amount=sum(r[2] for r in by_day),
            chart_day=charts.bars([(rollup.day_text(d)[5:], a / 100) for d, _n, a in by_day], "¥"),
            chart_route=charts.bars(
                [(str(r), a / 100) for r, _n, a in by_route], "¥", "#4f8f4f", 1
            ),
            chart_card=charts.bars([(str(c), a / 100) for c, _n, a in by_card], "¥", "#9f6f2f", 1),
            exceptions=rows,
            more=len(exc) > PAGE,
            reason_counts=sorted(reason_counts.items()),
            review_filter=status,
            statuses=REVIEW,
            opened=opened,
            n_open=n_open,
        )

    @guard
    def review(self, request, user, form):
        dev, seq = _int(form.get("device"), None), _int(form.get("seq"), None)
        status = form.get("status")
        if dev is None or seq is None or status not in REVIEW:
            return PlainTextResponse("bad review\n", 400, headers=HEADERS)
        note = (form.get("note") or "")[:500]
        with self.store._tx() as ex:
            if (
                ex.one(
                    "SELECT 1 FROM records WHERE device_id = ? AND seq = ? "
                    "AND exceptions IS NOT NULL",
                    (dev, seq),
                )
                is None
            ):
                return PlainTextResponse("no such exception\n", 404, headers=HEADERS)
            ex.run("DELETE FROM web_review WHERE device_id = ? AND seq = ?", (dev, seq))
            ex.run(
                "INSERT INTO web_review (device_id, seq, status, note, by_user, at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (dev, seq, status, note, user["name"], int(time.time())),
            )
        log.info("%s: exception %d/%d -> %s", user["name"], dev, seq, status)
        return RedirectResponse("/money", 303, headers=HEADERS)

    @guard
    def params(self, request, user, form):
        page = _int(request.query_params.get("page"), 0)
        with self.store._tx(write=False) as ex:
            rows = ex.all(
                "SELECT target, version, base, LENGTH(data), published FROM bundles "
                "ORDER BY published DESC, version DESC LIMIT ?",
                (PAGE,),
            )
            scope = {}
            for v, g, s in ex.all("SELECT version, grp, started FROM param_rollout"):
                scope.setdefault(v, []).append((g, s))
            total = ex.one("SELECT COUNT(*) FROM devices")[0]
            devices = ex.all(
                "SELECT d.device_id, d.name, p.have, p.asked, w.param_version FROM devices d "
                "LEFT JOIN device_params p ON p.device_id = d.device_id "
                "LEFT JOIN web_device w ON w.device_id = d.device_id "
                "ORDER BY d.device_id LIMIT ? OFFSET ?",
                (PAGE, page * PAGE),
            )
            grp_of = {}
            members = {}
            for dev, g in ex.all("SELECT device_id, grp FROM device_groups"):
                grp_of.setdefault(dev, []).append(g)
                members.setdefault(g, []).append(dev)
            have = dict(ex.all("SELECT device_id, have FROM device_params"))
        status = bundles.status(self.store)
        latest = max((s["version"] for s in status), default=None)
        # Rollout per group: for each version and group it is rolled out to, the group's
        # validators and how many said they hold that version or newer.
        per_group = []
        for st in status:
            for g in st["groups"] if isinstance(st["groups"], list) else ():
                if g["group"] == 0:
                    continue
                devs = members.get(g["group"], [])
                per_group.append(
                    {
                        "version": st["version"],
                        "group": g["group"],
                        "started": g["started"],
                        "members": len(devs),
                        "holding": sum(1 for d in devs if have.get(d, 0) >= st["version"]),
                    }
                )
        return self.render(
            request,
            "params.html",
            user,
            bundles=rows,
            scope=scope,
            status=status,
            per_group=per_group,
            devices=[
                {
                    "id": d,
                    "name": n,
                    "have": h,
                    "asked": a,
                    "active": pv,
                    "groups": grp_of.get(d, []),
                    "behind": latest is not None and (h or 0) < latest,
                }
                for d, n, h, a, pv in devices
            ],
            total=total,
            page=page,
            pages=(total + PAGE - 1) // PAGE,
        )

    @guard
    def rollout(self, request, user, form):
        version = _int(form.get("version"), None)
        group = _int(form.get("group"), None)
        if version is None or group is None or group < 0:
            return PlainTextResponse("bad rollout\n", 400, headers=HEADERS)
        try:
            bundles.rollout(self.store, version, None if group == 0 else [group])
        except ValueError as e:
            return PlainTextResponse("%s\n" % e, 400, headers=HEADERS)
        log.info("%s: rollout of version %d to group %d", user["name"], version, group)
        return RedirectResponse("/params", 303, headers=HEADERS)

    async def static(self, request):
        name = request.path_params["name"]
        if name not in STATIC:
            return PlainTextResponse("not found\n", 404)
        return Response(
            (HERE / "static" / name).read_bytes(),
            media_type=STATIC[name],
            headers={"Cache-Control": "max-age=3600", "X-Content-Type-Options": "nosniff"},
        )

    async def home(self, request):
        return RedirectResponse("/fleet", 303)


def _int(v, default):
    try:
        return int(v)
    except (TypeError, ValueError):
        return default


def _day(text, default):
    """'YYYY-MM-DD' -> day number, else default."""
    try:
        t = time.strptime(text or "", "%Y-%m-%d")
    except ValueError:
        return default
    import calendar

    return (calendar.timegm(t) - EPOCH_2000) // 86400


def create_web_app(store, roll_every=30.0):
    w = Web(store, roll_every)
    routes = [
        Route("/", w.home),
        Route("/login", w.login, methods=["GET", "POST"]),
        Route("/logout", w.do_logout, methods=["POST"]),
        Route("/fleet", w.fleet),
        Route("/device/{device}", w.device),
        Route("/money", w.money),
        Route("/money/review", w.review, methods=["POST"]),
        Route("/params", w.params),
        Route("/params/rollout", w.rollout, methods=["POST"]),
        Route("/static/{name}", w.static),
    ]
    app = Starlette(routes=routes)
    app.state.web = w
    return app
