"""What the simulated modem and its dialects (tools/sim/modem*.py) share below the modem itself."""


def split(arg):
    """An AT command's arguments: comma-separated, quotes taken off."""
    out = []
    for part in arg.split(","):
        part = part.strip()
        if len(part) >= 2 and part[0] == '"' and part[-1] == '"':
            part = part[1:-1]
        out.append(part)
    return out
