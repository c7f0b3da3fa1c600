"""The back office in a browser (issue 23, docs/dashboard.md): server-rendered pages (Jinja2) in
Chinese and English for the operations room and the finance office.

- schema.py: the dashboard's own tables (`web_schema`, apart from the collector's migrations);
- rollup.py: summary tables filled incrementally from `records` (pages never scan a year);
- auth.py: users (argon2id hashes), sessions (secure cookies, server-side), CSRF, roles;
- pages.py: the Starlette app: Fleet, a device, Money, Parameters; charts.py its SVG charts;
- cli.py: `python -m tools.collector web` (its own listener) and `... user` (accounts).

The pages run on their own listener with their own logins: a device's secret opens no page, and
the device endpoints (tools/collector/server.py) know nothing of the pages.
"""
