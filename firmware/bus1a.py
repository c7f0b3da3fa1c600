# The bus industry record (0x1A 0x2702: QT-TOOL, JTB-H, BJ-BUS) a boarding or alighting tap
# writes; out of tunion.py so that the module a flat-fare tap needs stays small (imported when a
# fare asks for it).
import tunion


def bus_record(
    base,
    status,
    city,
    institution,
    operator,
    route,
    stop,
    vehicle,
    terminal,
    datetime7,
    amount,
    serial,
    marked=0,
    direction=0xAB,
    mileage=0,
):
    """The 0x2702 bus record (QT-TOOL, JTB-H) for a boarding (status 1) or an alighting
    (status 2) tap, built on the card's current record `base` (None: a blank one). Boarding
    fills the boarding half and the marked amount (charged if no alighting tap comes);
    alighting keeps the boarding half and fills the alighting half with the amount charged."""
    r = bytearray(base if base is not None and len(base) == tunion.LEN_1A else tunion.LEN_1A)
    r[0:4] = b"\x27\x02\x7d\x01"
    r[4] = 0x01  # interconnection transaction flag: time/segment (compound) purchase
    r[6:14] = _bcd8(serial)
    r[14] = status
    term8 = b"\x00\x00" + bytes(terminal)
    veh = (bytes(vehicle) + b"\x00" * 8)[:8]
    if status == 0x01:
        r[15:17] = city
        r[17:25] = institution
        r[25:27] = operator.to_bytes(2, "big")
        r[27:29] = route.to_bytes(2, "big")
        r[29] = stop & 0xFF
        r[30:38] = veh
        r[38:46] = term8
        r[46:53] = datetime7
        r[53:57] = marked.to_bytes(4, "big")
        r[57] = direction
    else:
        r[58:60] = city
        r[60:68] = institution
        r[68:70] = operator.to_bytes(2, "big")
        r[70:72] = route.to_bytes(2, "big")
        r[72] = stop & 0xFF
        r[73:81] = veh
        r[81:89] = term8
        r[89:96] = datetime7
        r[96:100] = amount.to_bytes(4, "big")
        r[100:102] = mileage.to_bytes(2, "big")
    return bytes(r)


def _bcd8(value):
    out = bytearray(8)
    for i in range(7, -1, -1):
        value, low = divmod(value, 100)
        out[i] = ((low // 10) << 4) | (low % 10)
    return out
