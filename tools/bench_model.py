"""The tap-to-result time model for an ESP32 validator (docs/tap-model.md explains each term).

tap_model(details) takes the figures measured by tools/benchmarks.py (RF bytes and frames, PSAM
characters, firmware CPU time, flash operations per tap) and adds what the bench cannot measure:
reader bus costs from docs/nfc.md and docs/nfc-rc522.md, card and PSAM processing times from
public figures, flash timings from a SPI NOR datasheet, and a CPU scale factor. Every assumed
number is in PARAMS with its source, so a measurement on hardware replaces one line.
"""

# fc = 13.56 MHz; ISO/IEC 14443-2 type A at 106 kbit/s: one bit = 128/fc = 9.44 us, a byte on air
# is 8 bits + odd parity = 9 bits. The frame delay time PICC->PCD is at least 1172/fc = 86 us
# (ISO/IEC 14443-3 6.2.1.1), the same order PCD->PICC; SOF/EOF add about 2 bit times.
BIT_US = 128 / 13.56
BYTE_US = 9 * BIT_US
FRAME_OVERHEAD_US = 2 * BIT_US + 1172 / 13.56

PARAMS = {
    # Card processing per command, ms (typical). JT/T 978 card timings are not published; these
    # are set from public figures for contactless CPU cards: a SELECT "in less than 10 ms" on a
    # JCOP card (java-index.com forum thread on DES timing, 2007); "~30 ms SELECT APPLICATION +
    # first APDU exchange" and "~50 ms commit: TMAC, audit write" in a validator budget
    # (ambisecure.ambimat.com "Designing low-latency secure transit validators"); a whole EMV tap
    # of 6-8 APDUs in 315-325 ms on new cards, phone reader included (wwopenfare.com "IsoDep
    # Transceive Times"), i.e. roughly 30-45 ms per APDU all in. DEBIT writes the balance, the
    # counter, the 0x18 and 0x1E records in EEPROM and computes MAC2 and TAC: the longest.
    "card_ms": {"A4": 10.0, "B0": 5.0, "50": 15.0, "DC": 10.0, "54": 40.0, "B2": 5.0},
    "card_ms_slow_factor": 2.0,  # the slow band: older or SM4 cards (assumption)
    # PSAM processing: 8070 diversifies the card key twice, derives the session key and computes
    # MAC1 (about six DES/3DES or SM4 block operations with a coprocessor), 8072 one MAC. Assumed.
    "psam_ms": {"70": 15.0, "72": 5.0},
    # ESP32 UART receive latency: the IDF hands bytes over on its RX timeout, about 10 character
    # times after the line goes quiet, on each turnaround (docs/psam-link.md, "to measure on
    # hardware"), plus the 16 etu guard the driver keeps before sending after receiving.
    "psam_rx_latency_chars": 10,
    "psam_guard_etu": 16,
    "psam_pps_baud": 38400,  # TA1 0x13 at 3.5712 MHz: the common PSAM case (docs/psam-link.md)
    # Reader buses, measured on the simulated chips (docs/nfc.md "Bus cost", docs/nfc-rc522.md
    # "Tests and figures"): poll with a card present + the 5 APDUs of a flat-fare purchase.
    "pn532_hsu": {
        "baud": 115200,
        "bits": 10,
        "poll_bytes": 41,
        "purchase_bytes": 348,
        "transactions": 12,
        "per_transaction_ms": 1.0,
    },
    "pn532_i2c": {
        "hz": 400000,
        "bits": 9,
        "poll_bytes": 100,
        "purchase_bytes": 692,
        "transactions": 33,
        "bus_free_ms": 5.0,
        "per_transaction_ms": 0.1,
    },
    "pn532_spi": {
        "hz": 1000000,
        "poll_bytes": 48,
        "purchase_bytes": 383,
        "transactions": 36,
        "per_transaction_ms": 0.1,
    },
    "rc522_spi": {
        "hz": 4000000,
        "activation_bytes": 109,
        "purchase_bytes": 364,
        "transactions": 88,
        "per_transaction_ms": 0.05,
    },
    # PN532 internal handling of one InDataExchange / InListPassiveTarget beyond the RF time:
    # not published (UM0701-02 not available to us); assumed 1 ms each.
    "pn532_command_ms": 1.0,
    # Firmware CPU: unix-port time on this machine x factor. A 240 MHz ESP32 runs MicroPython
    # bytecode some tens of times slower than one x86-64 core (blog.miguelgrinberg.com
    # "Benchmarking MicroPython", 2025, compares boards with a laptop; scruss.com's board table
    # puts the ESP32 at 160 MHz ~1.7x behind an ESP32-S3 at 240 MHz). 40 is an assumption:
    # run tools/bench_mpy/tap.py on a board to replace it.
    "cpu_factor": 40,
    # SPI NOR flash (Winbond W25Q32JV datasheet, the ESP32-WROOM's kind): page program 0.4 ms
    # typical (3 ms max) per 256 bytes, 4 KB sector erase 45 ms typical (400 ms max).
    "flash_program_ms": 0.4,
    "flash_erase_ms": 45.0,
    # Card detection: the tap loop polls every 20 ms when idle (firmware/app.py _POLL_IDLE_MS):
    # half a period on average before the poll that finds the card.
    "detect_ms": 10.0,
}

TARGETS = {
    "DB31/T 239-2020 (Shanghai), consumption incl. record": 400,
    "WMATA NEPP bus/gate response": 300,
    "Calypso complete transaction": 200,
}


def _card_ms(ex_card, slow=False):
    total = 0.0
    for cmd_hex, _resp, _err in ex_card:
        ins = cmd_hex[2:4].upper()
        total += PARAMS["card_ms"].get(ins, 10.0)
    return total * (PARAMS["card_ms_slow_factor"] if slow else 1.0)


def _psam_ms(d):
    to_card, from_card = d["psam_chars"]
    chars = to_card + from_card
    turns = d["psam_turnarounds"]
    out = {}
    for name, baud in (("9600", 9600), ("pps", PARAMS["psam_pps_baud"])):
        etu_ms = 1000.0 / baud
        line = chars * 12 * etu_ms
        waits = turns * (PARAMS["psam_guard_etu"] + PARAMS["psam_rx_latency_chars"] * 12) * etu_ms
        proc = sum(PARAMS["psam_ms"].get(c[2:4], 5.0) for c, _r, _e in d["exchange_psam"])
        out[name] = {
            "line_ms": line,
            "waits_ms": waits,
            "processing_ms": proc,
            "total_ms": line + waits + proc,
        }
    return out


def tap_model(d):
    """Per reader configuration: the terms and the total in ms, and the targets."""
    rf_ms = (d["rf_bytes_per_tap"] * BYTE_US + d["rf_frames_per_tap"] * FRAME_OVERHEAD_US) / 1000
    card = _card_ms(d["exchange_card"])
    card_slow = _card_ms(d["exchange_card"], slow=True)
    psam = _psam_ms(d)
    # the whole application's tap (decision, purchase, journal; uploads spread over the taps),
    # process CPU time on the unix port
    cpu_us = d.get("app_cpu_us_per_tap") or d["tap_cpu_us"]
    cpu = cpu_us * PARAMS["cpu_factor"] / 1000
    flash = (
        d["app_flash_programs_per_tap"] * PARAMS["flash_program_ms"]
        + d["app_flash_erases_per_tap"] * PARAMS["flash_erase_ms"]
    )
    answers = len(d["exchange_card"]) + 1  # the APDUs and the activation
    p = PARAMS

    def pn532_cmds():
        return answers * p["pn532_command_ms"]

    links = {}
    h = p["pn532_hsu"]
    links["pn532_hsu"] = (
        (h["poll_bytes"] + h["purchase_bytes"]) * h["bits"] * 1000 / h["baud"]
        + h["transactions"] * h["per_transaction_ms"]
        + pn532_cmds()
    )
    i = p["pn532_i2c"]
    i2c_bytes = (i["poll_bytes"] + i["purchase_bytes"]) * i["bits"] * 1000 / i["hz"]
    # The bus-free time paces every transaction, the ready polls while the card works included:
    # the link costs at least transactions x bus_free, and overlaps the card's and the RF time.
    paced = i["transactions"] * i["bus_free_ms"]
    overlap = card + rf_ms
    links["pn532_i2c"] = (
        i2c_bytes + max(0.0, paced - overlap) + answers * i["bus_free_ms"] / 2 + pn532_cmds()
    )
    s = p["pn532_spi"]
    links["pn532_spi"] = (
        (s["poll_bytes"] + s["purchase_bytes"]) * 8 * 1000 / s["hz"]
        + s["transactions"] * s["per_transaction_ms"]
        + pn532_cmds()
    )
    r = p["rc522_spi"]
    links["rc522_spi"] = (r["activation_bytes"] + r["purchase_bytes"]) * 8 * 1000 / r["hz"] + r[
        "transactions"
    ] * r["per_transaction_ms"]
    configs = {}
    for name in ("pn532_hsu", "pn532_i2c", "rc522_spi", "pn532_spi"):
        terms = {
            "detect_ms": p["detect_ms"],
            "rf_ms": rf_ms,
            "card_ms": card,
            "reader_link_ms": links[name],
            "psam_ms": psam["pps"]["total_ms"],
            "firmware_cpu_ms": cpu,
            "flash_ms": flash,
        }
        total = sum(terms.values())
        slow = total - card + card_slow - psam["pps"]["total_ms"] + psam["9600"]["total_ms"]
        configs[name] = {
            "terms": {k: round(v, 1) for k, v in terms.items()},
            "total_ms": round(total, 1),
            "slow_ms": round(slow, 1),
            "meets": {t: total <= ms for t, ms in TARGETS.items()},
        }
    return {
        "configs": configs,
        "psam": {k: {kk: round(vv, 1) for kk, vv in v.items()} for k, v in psam.items()},
        "card_ms_typical": round(card, 1),
        "card_ms_slow": round(card_slow, 1),
        "rf_ms": round(rf_ms, 2),
        "cpu_unix_us": cpu_us,
        "cpu_factor": p["cpu_factor"],
        "flash_ms": round(flash, 1),
        "targets_ms": TARGETS,
        "params": PARAMS,
    }
