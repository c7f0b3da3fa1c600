# The purchase tests' log: `memlog.make(book)` gives an object with the transaction log's interface
# (CONTRACTS.md: append, open_intents, can_accept_purchase, ...) that also copies every record it
# accepted, decoded, into the list `book` (the tests' view of what was booked). It runs the real
# firmware/txlog.py on a RAM flash device when those exist, else a small in-RAM stand-in.
import record


class LogFull(Exception):
    pass


class _RamLog:
    """Stand-in: keeps the open intents only; an outcome closes the open intent of the same card
    and ATC, as the log's append does."""

    def __init__(self):
        self.opens = []
        self.last_seq = 0
        self.acked_seq = 0

    def append(self, fields):
        seq = self.last_seq + 1
        r = record.decode(record.encode(fields, seq))
        if r["kind"] == record.DEBIT_INTENT:
            self.opens.append(r)
        elif r["kind"] in record.OUTCOME_KINDS:
            key = (r["card_no"], r["card_atc"])
            self.opens = [o for o in self.opens if (o["card_no"], o["card_atc"]) != key]
        self.last_seq = seq
        return seq

    def can_accept_purchase(self):
        return True

    def open_intents(self):
        return list(self.opens)


def _real_log():
    try:
        import rawflash
        import txlog
    except ImportError:
        return None
    return txlog.TxLog(rawflash.RawFlash(16))


class Booked:
    """Wraps a log: every record it accepted is also decoded into `book` (intents only when
    `intents`: tests about what was sold read the outcomes alone)."""

    def __init__(self, inner, book, intents=True):
        self.inner = inner
        self.book = book
        self.intents = intents
        self.fail_kinds = ()  # appends of these kinds raise OSError (a flash fault)
        self.refuse = False  # the log is full: purchases refused, appends raise LogFull

    def append(self, fields):
        if fields.get("kind") in self.fail_kinds:
            raise OSError(5, "injected flash fault")
        if self.refuse:
            raise LogFull("log full")
        seq = self.inner.append(fields)
        if self.intents or fields.get("kind") != record.DEBIT_INTENT:
            self.book.append(record.decode(record.encode(fields, seq)))
        return seq

    def can_accept_purchase(self):
        return not self.refuse and self.inner.can_accept_purchase()

    def __getattr__(self, name):
        return getattr(self.inner, name)


def ram():
    """The in-RAM stand-in alone (CPython tests of the purchase, which have no flash device)."""
    return _RamLog()


def plain():
    """The log alone (no copy of each record): for figures of the purchase itself."""
    return _real_log() or _RamLog()


def make(book=None, inner=None, intents=True):
    if inner is None:
        inner = _real_log() or _RamLog()
    return Booked(inner, [] if book is None else book, intents)
