"""Plain-text tables for benchmark reports (no TensorFlow import, so a
benchmark's parent process stays light)."""


def print_table(headers, rows):
    """Prints `rows` (lists of strings) under `headers`, columns aligned."""
    widths = [
        max(len(str(row[i])) for row in [headers, *rows])
        for i in range(len(headers))
    ]

    def line(cells):
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))

    print(line(headers).rstrip())
    print(line(["-" * w for w in widths]).rstrip())
    for row in rows:
        print(line(row).rstrip())
