# A fixed-size byte ring buffer: preallocated, no allocation on put/get. Used for byte streams
# (UART receive paths, the AT engine) where a list of bytes objects would churn the heap.


class RingBuffer:
    def __init__(self, size):
        self._buf = bytearray(size)
        self._size = size
        self._head = 0  # next write
        self._tail = 0  # next read
        self._count = 0

    def __len__(self):
        return self._count

    @property
    def capacity(self):
        return self._size

    def free(self):
        return self._size - self._count

    def put(self, data):
        """Append bytes; returns how many fit (the rest is dropped, never overwriting)."""
        n = min(len(data), self._size - self._count)
        buf = self._buf
        head = self._head
        for i in range(n):
            buf[head] = data[i]
            head += 1
            if head == self._size:
                head = 0
        self._head = head
        self._count += n
        return n

    def put_byte(self, byte):
        if self._count == self._size:
            return False
        self._buf[self._head] = byte
        self._head = (self._head + 1) % self._size
        self._count += 1
        return True

    def get_byte(self):
        """Remove and return one byte, or -1 when empty."""
        if not self._count:
            return -1
        byte = self._buf[self._tail]
        self._tail = (self._tail + 1) % self._size
        self._count -= 1
        return byte

    def peek(self, index=0):
        if index >= self._count or index < 0:
            raise IndexError("ring index")
        return self._buf[(self._tail + index) % self._size]

    def readinto(self, out, n=None):
        """Move up to n bytes (default len(out)) into `out`; returns how many."""
        if n is None:
            n = len(out)
        n = min(n, self._count)
        buf = self._buf
        tail = self._tail
        for i in range(n):
            out[i] = buf[tail]
            tail += 1
            if tail == self._size:
                tail = 0
        self._tail = tail
        self._count -= n
        return n

    def find(self, byte):
        """Index of the first `byte` from the read position, or -1."""
        buf = self._buf
        pos = self._tail
        for i in range(self._count):
            if buf[pos] == byte:
                return i
            pos += 1
            if pos == self._size:
                pos = 0
        return -1

    def clear(self):
        self._head = self._tail = self._count = 0
