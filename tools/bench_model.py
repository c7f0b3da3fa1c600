"""The tap-to-result time model for an ESP32 validator (docs/tap-model.md explains each term).

tap_model(details) takes the figures measured by tools/benchmarks.py (RF bytes and frames, the
APDUs the virtual card and PSAM exchanged, the firmware's instructions and CPU time per tap) and
adds what the bench cannot measure: reader bus costs from docs/nfc.md and docs/nfc-rc522.md,
card and PSAM processing times from public figures, flash timings from a SPI NOR datasheet and
the ESP32's cycles per instruction. Every assumed number is in PARAMS with its source, so a
measurement on hardware replaces one line.

The rider waits from the card entering the field to the green light, which comes once DEBIT has
answered with TAC and MAC2 (issue 14: the PSAM's MAC2 check and the outcome record follow). The
PSAM's INIT SAM FOR PURCHASE (8070) is sent as soon as the card's INIT has answered and computes
while the card works on UPDATE CAPP DATA CACHE (drivers/psam_link.py transceive_start/finish).
"""

import iso7816

# fc = 13.56 MHz; ISO/IEC 14443-2 type A at 106 kbit/s: one bit = 128/fc = 9.44 us, a byte on air
# is 8 bits + odd parity = 9 bits. The frame delay time PICC->PCD is at least 1172/fc = 86 us
# (ISO/IEC 14443-3 6.2.1.1), the same order PCD->PICC; SOF/EOF add about 2 bit times. At 212 and
# 424 kbit/s a bit is 64/fc and 32/fc (ISO/IEC 14443-2 bit rates fc/64, fc/32); the frame delay
# is kept at 86 us, which is pessimistic.
FC_MHZ = 13.56
FDT_US = 1172 / FC_MHZ


def _bit_us(kbps):
    return {106: 128, 212: 64, 424: 32, 848: 16}[kbps] / FC_MHZ


def _rf_ms(nbytes, frames, kbps=106):
    bit = _bit_us(kbps)
    return (nbytes * 9 * bit + frames * (2 * bit + FDT_US)) / 1000


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
    # The PSAM's clock on the ESP32 boards (boards/esp32_common.py PSAM clk_hz: 80 MHz / 20 from
    # the LEDC) and its rate after PPS: TA1 0x13 (F 372, D 4), the common PSAM case
    # (docs/psam-link.md); the slow band keeps the default rate (PPS refused: F 372, D 1).
    "psam_clk_hz": 4000000,
    "psam_fd": (372, 4),
    "psam_fd_slow": (372, 1),
    # ESP32 UART receive latency: MicroPython's ports/esp32/machine_uart.c sets the IDF RX timeout
    # from timeout_char in characters; below one character it sets the RX FIFO full threshold to 1
    # and a 1-character timeout. The PSAM link asks timeout_char=0: about one character time per
    # reception, plus the 16 etu guard the driver keeps before sending after receiving.
    "psam_rx_latency_chars": 1,
    "psam_guard_etu": 16,
    # Commands whose header the purchase sends ahead, before the card's INITIALIZE
    # (firmware/psam_app.py announce_purchase, drivers/psam_link.py transceive_header).
    "psam_header_ahead": ("70",),
    # Reader buses, measured on the simulated chips (docs/nfc.md "Bus cost", docs/nfc-rc522.md
    # "Tests and figures"): poll with a card present + the 5 APDUs of a flat-fare purchase.
    "pn532_hsu": {
        # The board moves the chip to 1 288 000 baud, the last entry of SetSerialBaudRate's
        # table (nfcpy src/nfc/clf/pn532.py), after init (boards/esp32s3_pn532_hsu
        # "fast_baud"); the ESP32-S3 UART makes 80 MHz x 16 / 993 = 1 289 023 baud (+0.08 %,
        # esp-idf uart_ll_set_baudrate, drivers/iso7816.py uart_clk_div).
        "baud": 1288000,
        "bits": 10,
        "poll_bytes": 41,
        "purchase_bytes": 348,
        # the driver's UART writes and reads (tests/mpy/test_pn532_purchase.py): 3 + 15, three
        # a command (the frame out, the ACK in, the answer in; 12 before was two a command)
        "transactions": 18,
        "per_transaction_ms": 0.1,  # MicroPython call and UART driver overhead per write/read
        # drivers/pn532_uart.py looks at the UART every 100 us while the chip works: 50 us of
        # latency on average for each of the two waits of a command (ACK, response)
        "look_ms": 0.1,
    },
    "pn532_i2c": {
        "hz": 400000,
        "bits": 9,
        # measured with the IRQ line the boards wire (tests/mpy/test_pn532_purchase.py): poll
        # 3 transactions, 62 B; purchase 17, 500 B (46 / 614 B before, with status polls)
        "poll_bytes": 62,
        "purchase_bytes": 500,
        "transactions": 20,
        "per_transaction_ms": 0.1,  # MicroPython call and I2C driver overhead per transaction
        # Every board wires the PN532's IRQ (boards/*/board.py "irq"; SAMConfiguration turns it
        # on): drivers/pn532_i2c.py looks at it every 100 us (without it, the status every
        # 500 us): 50 us of latency on average for each of the two waits of a command
        "look_ms": 0.1,
    },
    "pn532_spi": {
        # 1 MHz: the PN532's highest SPI clock is UNCONFIRMED (UM0701-02 not read; libnfc and
        # ESPHome use 1 MHz)
        "hz": 1000000,
        # measured with the IRQ line the boards wire (tests/mpy/test_pn532_purchase.py): poll
        # 4 transfers, 44 B; purchase 20, 363 B (36 / 431 B before, with status polls)
        "poll_bytes": 44,
        "purchase_bytes": 363,
        "transactions": 24,
        "per_transaction_ms": 0.1,
        # drivers/pn532_spi.py looks at the IRQ line every 100 us (it used to sleep 1 ms between
        # looks, which this model did not charge): 50 us per wait, two waits a command
        "look_ms": 0.1,
    },
    "rc522_spi": {
        # 10 MHz: the MFRC522's SPI limit (NXP MFRC522 datasheet, SPI "up to 10 Mbit/s"; the
        # Arduino library miguelbalboa/rfid src/MFRC522.h says the same);
        # boards/esp32_rc522_spi asks for it
        "hz": 10000000,
        "activation_bytes": 109,
        "purchase_bytes": 364,
        "transactions": 88,
        "per_transaction_ms": 0.05,
        # drivers/rc522.py: 8 looks back to back (counted in `transactions`), then the IRQ
        # line every 100 us: 50 us of latency per frame exchange (it used to sleep 1 ms, which
        # this model did not charge)
        "look_ms": 0.1,
    },
    # PN532 internal handling of one InDataExchange / InListPassiveTarget beyond the RF time:
    # not published (UM0701-02 not available to us); assumed 1 ms each.
    "pn532_command_ms": 1.0,
    # Firmware CPU: instructions per tap counted by callgrind on the unix port, times the ESP32's
    # cycles per such instruction, over its clock. 1.5 cycles per instruction is an assumption:
    # the LX6 is single-issue and in order (at least 1), runs code and frozen bytecode from flash
    # through its cache (misses add), and 1.44 is what the earlier x40-at-240-MHz factor of this
    # model meant on this machine (966 k x86-64 instructions in 145 us per tap.py tap). Stock
    # ESP32_GENERIC runs at 160 MHz, the validator build (issue 15) at 240 MHz. Replace with
    # tools/bench_mpy/tap.py timed on a board (docs/tap-model.md).
    "cpu_cycles_per_instruction": 1.5,
    "cpu_mhz": (160, 240),
    "cpu_mhz_model": 240,
    # When callgrind did not run (--no-callgrind): instructions per us of unix-port CPU time, from
    # the committed run (966 315 instructions / 145 us).
    "instructions_per_us_fallback": 6664,
    # SPI NOR flash (Winbond W25Q32JV datasheet, the ESP32-WROOM's kind): page program 0.4 ms
    # typical (3 ms max) per 256 bytes, 4 KB sector erase 45 ms typical (400 ms max).
    "flash_program_ms": 0.4,
    "flash_erase_ms": 45.0,
    # The transaction log's flash work in a tap (CONTRACTS.md, firmware/txlog.py): the intent
    # before DEBIT and the outcome after it, one 64-byte program each, never an erase. Used when
    # the bench did not measure txlog_tap_programs / txlog_tap_erases (bench_mpy/txlog_fig.py).
    "txlog_programs_per_tap": 2,
    "txlog_erases_per_tap": 0,
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
        total += PARAMS["card_ms"].get(cmd_hex[2:4].upper(), 10.0)
    return total * (PARAMS["card_ms_slow_factor"] if slow else 1.0)


def _t0(cmd_hex, resp_hex, fd, ahead=False):
    """One T=0 command at the rate F/D on the PSAM clock, split as the link does it:
    start (header, ACK), busy (data out, computation, status, while the caller is away), finish
    (GET RESPONSE for the data, or the data of a case-2 command). ms each. The link writes a
    command's last data without waiting for their echo (drivers/psam_link.py, deferred echo),
    so the data's line time is the PSAM's, not the caller's. ahead: the header went before the
    card's INITIALIZE (transceive_header): `pre` (header, procedure byte) is then spent while
    the card works, and start is the 16 etu guard the driver keeps after reading that byte."""
    p = PARAMS
    baud = iso7816.baud_for(p["psam_clk_hz"], fd[0], fd[1])
    etu = 1000.0 / baud
    char = iso7816.CHAR_ETU * etu
    turn = p["psam_guard_etu"] * etu + p["psam_rx_latency_chars"] * char
    cmd = bytes.fromhex(cmd_hex)
    resp = bytes.fromhex(resp_hex or "")
    lc = cmd[4] if len(cmd) > 5 else 0
    le = len(resp) - 2 if len(resp) > 2 else 0
    proc = p["psam_ms"].get(cmd_hex[2:4], 5.0)
    pre = 0.0
    if lc:
        start = (5 + 1) * char + turn
        if ahead:
            pre, start = start, p["psam_guard_etu"] * etu
        busy = lc * char + proc + 2 * char + turn
        finish = (5 + 1 + le + 2) * char + turn if le else 0.0
    else:
        start = 5 * char
        busy = proc + (1 + le + 2) * char + turn
        finish = 0.0
    return {"baud": baud, "pre": pre, "start": start, "busy": busy, "finish": finish}


def _cpu(d):
    """-> (instructions per tap on the critical path, source text). The critical path's CPU is
    the purchase (tools/bench_mpy/tap.py: Purchaser, fakes) and the application's decision
    (blacklist, whitelist, fare), both counted by callgrind on micropython32 when the bench ran
    it (tap_instructions_32, decide_instructions_32: stable counts). Without the decision's
    count, its wall time (app_tap_breakdown_us["decide"]) is scaled at tap.py's instructions
    per microsecond of CPU time (noisy on a shared machine)."""
    tap_us = d["tap_cpu_us"]
    decide_us = (d.get("app_tap_breakdown_us") or {}).get("decide", 0.0)
    if d.get("tap_instructions_32_to_result") and d.get("decide_instructions_32"):
        n = d["tap_instructions_32_to_result"] + d["decide_instructions_32"]
        return n, (
            "tap_instructions_32_to_result (i386 callgrind count of tools/bench_mpy/tap.py on "
            "micropython32 from the tap's start to the result; the MAC2 check, the outcome "
            "record and the log line follow it) + decide_instructions_32 (the same count of "
            "the decision: tools/bench_mpy/decide_count.py, flat fare)"
        )
    if d.get("tap_instructions_32") and d.get("decide_instructions_32"):
        n = d["tap_instructions_32"] + d["decide_instructions_32"]
        return n, (
            "tap_instructions_32 (i386 callgrind count of tools/bench_mpy/tap.py on "
            "micropython32) + decide_instructions_32 (the same count of the decision: "
            "tools/bench_mpy/decide_count.py, flat fare)"
        )
    if d.get("tap_instructions_32"):
        per_us = d["tap_instructions_32"] / tap_us
        src = (
            "tap_instructions_32 (i386 callgrind count of tools/bench_mpy/tap.py on micropython32)"
        )
    elif d.get("tap_instructions"):
        per_us = d["tap_instructions"] / tap_us
        src = (
            "tap_instructions (x86-64 callgrind count of tools/bench_mpy/tap.py on the 64-bit "
            "unix port; tap_instructions_32 was not measured in this run)"
        )
    else:
        per_us = PARAMS["instructions_per_us_fallback"]
        src = "tap_cpu_us x %d instructions/us (no callgrind in this run)" % per_us
    src += (
        "; the decision (app_tap_breakdown_us decide, %.0f us) scaled at the same rate" % decide_us
    )
    return (tap_us + decide_us) * per_us, src


def tap_model(d):
    """Per reader configuration: the terms and the total in ms, and the targets."""
    p = PARAMS
    ex_card = d["exchange_card"]
    ex_psam = d["exchange_psam"]
    answers = len(ex_card) + 1  # the APDUs and the activation
    # RF to the DEBIT's answer: the DESELECT (3 bytes each way, 2 frames) comes after the result.
    rf_bytes = d["rf_bytes_per_tap"] - 6
    rf_frames = d["rf_frames_per_tap"] - 2
    rf_ms = _rf_ms(rf_bytes, rf_frames)
    # A card whose ATS offers 424 kbit/s both ways: activation at 106, a PPS exchange (PPSS,
    # PPS0, PPS1 + CRC_A; PPSS + CRC_A), the APDUs at 424 (drivers: PN532 InPSL, RC522 PPS).
    act = d["rf_bytes_activation"]
    act_frames = rf_frames - 2 * len(ex_card)
    rf_424 = _rf_ms(act + 5 + 3, act_frames + 2) + _rf_ms(rf_bytes - act, 2 * len(ex_card), 424)
    card = _card_ms(ex_card)
    card_slow = _card_ms(ex_card, slow=True)
    instructions, cpu_src = _cpu(d)
    cpi = p["cpu_cycles_per_instruction"]
    cpu = {str(mhz): instructions * cpi / (mhz * 1000.0) for mhz in p["cpu_mhz"]}
    cpu_ms = cpu[str(p["cpu_mhz_model"])]
    programs = d.get("txlog_tap_programs")
    erases = d.get("txlog_tap_erases")
    flash_src = (
        "txlog_tap_programs / txlog_tap_erases (measured on the transaction log, the worst of "
        "an empty and a full log)"
    )
    if programs is None or erases is None:
        programs, erases = p["txlog_programs_per_tap"], p["txlog_erases_per_tap"]
        flash_src = "the transaction log's contract (CONTRACTS.md): 2 programs, no erase"
    flash = programs * p["flash_program_ms"] + erases * p["flash_erase_ms"]

    def pn532_cmds():
        return answers * p["pn532_command_ms"]

    def waits(cfg, n):
        """n waits for the chip, each noticed half a look period late on average."""
        return n * cfg["look_ms"] / 2

    links = {}
    h = p["pn532_hsu"]
    links["pn532_hsu"] = (
        (h["poll_bytes"] + h["purchase_bytes"]) * h["bits"] * 1000 / h["baud"]
        + h["transactions"] * h["per_transaction_ms"]
        + waits(h, 2 * answers)
        + pn532_cmds()
    )
    i = p["pn532_i2c"]
    links["pn532_i2c"] = (
        (i["poll_bytes"] + i["purchase_bytes"]) * i["bits"] * 1000 / i["hz"]
        + i["transactions"] * i["per_transaction_ms"]
        + waits(i, 2 * answers)
        + pn532_cmds()
    )
    s = p["pn532_spi"]
    links["pn532_spi"] = (
        (s["poll_bytes"] + s["purchase_bytes"]) * 8 * 1000 / s["hz"]
        + s["transactions"] * s["per_transaction_ms"]
        + waits(s, 2 * answers)
        + pn532_cmds()
    )
    r = p["rc522_spi"]
    links["rc522_spi"] = (
        (r["activation_bytes"] + r["purchase_bytes"]) * 8 * 1000 / r["hz"]
        + r["transactions"] * r["per_transaction_ms"]
        + waits(r, rf_frames // 2)  # one wait per frame exchange, activation included
    )

    # The UPDATE CAPP DATA CACHE the PSAM's 8070 overlaps: the card's time, its frames on air.
    update = [e for e in ex_card if e[0][2:4].upper() == "DC"]
    upd_bytes = sum(len(bytes.fromhex(c)) + len(bytes.fromhex(r or "")) + 6 for c, r, _ in update)

    # INITIALIZE FOR PURCHASE, which 8070's header (sent ahead) overlaps: card time, frames.
    inits = [e for e in ex_card if e[0][2:4].upper() == "50"]
    init_bytes = sum(len(bytes.fromhex(c)) + len(bytes.fromhex(r or "")) + 6 for c, r, _ in inits)

    def psam_terms(fd, slow, link_ms):
        by_ins = {c[2:4]: _t0(c, r, fd, c[2:4] in p["psam_header_ahead"]) for c, r, _e in ex_psam}
        init = by_ins.get("70")
        init_window = (
            sum(p["card_ms"].get("50", 15.0) for _ in inits)
            * (p["card_ms_slow_factor"] if slow else 1.0)
            + _rf_ms(init_bytes, 2 * len(inits))
        )
        window = (
            sum(p["card_ms"].get("DC", 10.0) for _ in update)
            * (p["card_ms_slow_factor"] if slow else 1.0)
            + _rf_ms(upd_bytes, 2 * len(update))
            + link_ms * len(update) / answers
        )
        crit = 0.0
        if init:
            crit = (
                max(0.0, init["pre"] - init_window)
                + init["start"]
                + max(0.0, init["busy"] - window)
                + init["finish"]
            )
        after = sum(
            t["pre"] + t["start"] + t["busy"] + t["finish"] for k, t in by_ins.items() if k != "70"
        )
        return crit, after, window

    configs = {}
    for name in ("pn532_hsu", "pn532_i2c", "rc522_spi", "pn532_spi"):
        link = links[name]
        psam, after, window = psam_terms(p["psam_fd"], False, link)
        psam_slow, _a, _w = psam_terms(p["psam_fd_slow"], True, link)
        terms = {
            "detect_ms": p["detect_ms"],
            "rf_ms": rf_ms,
            "card_ms": card,
            "reader_link_ms": link,
            "psam_ms": psam,
            "firmware_cpu_ms": cpu_ms,
            "flash_ms": flash,
        }
        total = sum(terms.values())
        slow = total - card + card_slow - psam + psam_slow
        configs[name] = {
            "terms": {k: round(v, 1) for k, v in terms.items()},
            "total_ms": round(total, 1),
            "total_ms_cpu": {
                mhz: round(total - cpu_ms + c, 1) for mhz, c in sorted(cpu.items(), key=_mhz)
            },
            "total_ms_card_424": round(total - rf_ms + rf_424, 1),
            "slow_ms": round(slow, 1),
            "after_result_ms": round(after, 1),
            "psam_overlap_window_ms": round(window, 1),
            "meets": {t: total <= ms for t, ms in TARGETS.items()},
        }
    return {
        "configs": configs,
        "by_reader": {k: v["total_ms"] for k, v in configs.items()},
        "psam_rates": {
            "typical": iso7816.baud_for(p["psam_clk_hz"], *p["psam_fd"]),
            "slow": iso7816.baud_for(p["psam_clk_hz"], *p["psam_fd_slow"]),
        },
        "card_ms_typical": round(card, 1),
        "card_ms_slow": round(card_slow, 1),
        "rf_ms": round(rf_ms, 2),
        "rf_ms_424": round(rf_424, 2),
        "rf_gain_424_ms": round(rf_ms - rf_424, 2),
        "cpu_instructions_per_tap": round(instructions),
        "cpu_ms": {k: round(v, 1) for k, v in sorted(cpu.items(), key=_mhz)},
        "cpu_mhz_model": p["cpu_mhz_model"],
        "cpu_source": cpu_src + "; x %.1f cycles per instruction (assumed, PARAMS) / clock" % cpi,
        "flash_ms": round(flash, 1),
        "flash_source": flash_src,
        "targets_ms": TARGETS,
        "params": PARAMS,
    }


def _mhz(item):
    return int(item[0])
