# The modem tests' common set-up (tests/mpy and tools/bench_mpy): the simulated module's fast
# timings (tools/sim/modem.py `modem_timing`) and a ModemTransport whose own limits suit them (a
# real module's are seconds: docs/modem.md). Each user overrides what its case needs.
from modem import ModemTransport
from modem_quectel import QuectelDialect
from modem_simcom import SimcomDialect

# The simulated module: power pulses, boot, SIM and registration, guard times, URC gaps (ms).
SIM_TIMING = {
    "on_pulse_ms": 50,
    "off_pulse_ms": 300,
    "boot_ms": 100,
    "sim_ready_ms": 200,
    "reg_ms": 100,
    "guard_ms": 100,
    "urc_ms": 10,
}

# The driver's side of the same: pulses a little longer than the module needs, timeouts well
# above the simulated times.
FAST = {
    "apn": "cmnet",
    "on_pulse_ms": 80,
    "off_pulse_ms": 350,
    "rdy_timeout_ms": 2000,
    "sim_timeout_ms": 3000,
    "reg_timeout_ms": 3000,
    "reg_wait_ms": 400,
    "poll_ms": 100,
    "guard_ms": 120,
}


def timing(**over):
    t = dict(SIM_TIMING)
    t.update(over)
    return t


def dialect(name, cmd_ms=600):
    return SimcomDialect(cmd_ms=cmd_ms) if name == "simcom" else QuectelDialect(cmd_ms=cmd_ms)


def transport(uart, pwrkey, name, cmd_ms=600, **over):
    """A ModemTransport on `uart` for dialect `name` ("simcom" or "quectel") with FAST's limits,
    `over` changing or adding any of them (probe_ms, settle_ms, baudrate, ...)."""
    args = dict(FAST)
    args.update(over)
    return ModemTransport(uart, pwrkey, dialect(name, cmd_ms), **args)
