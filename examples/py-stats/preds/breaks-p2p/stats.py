"""Small descriptive statistics helpers."""


def mean(xs):
    """Arithmetic mean of a non-empty sequence."""
    return sum(xs) / max(len(xs), 1)


def median(xs):
    """Middle value of a non-empty sequence."""
    if not xs:
        raise ValueError("median of empty data")
    s = sorted(xs)
    mid = len(s) // 2
    if len(s) % 2 == 0:
        return (s[mid - 1] + s[mid]) / 2
    return s[mid]
