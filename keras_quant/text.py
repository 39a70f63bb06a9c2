"""Plain-text tables for results printed to a terminal."""


def table(rows):
    """Left-aligned columns, two spaces apart; the first row is the header.

    >>> print(table([("mode", "KB"), ("int8", "45.8")]))
    mode  KB
    int8  45.8
    """
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(
            cell.ljust(width) for cell, width in zip(row, widths)
        ).rstrip()
        for row in rows
    )
