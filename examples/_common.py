"""What the example scripts share: their command line and their plain-text tables."""
import argparse
import os

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "output")


def parse_args(argv, doc, quick_help="a few epochs on tiny data (smoke run)"):
    """--quick, --out DIR, --threads N; the description is the first line of ``doc``."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--quick", action="store_true", help=quick_help)
    p.add_argument("--out", default=DEFAULT_OUT, help="directory for the PNG (default: examples/output)")
    p.add_argument("--threads", type=int, default=1,
                   help="pydl threads (default 1: these networks are small, extra threads only add overhead)")
    return p.parse_args(argv)


def format_table(headers, rows):
    """Plain-text table: numeric columns right-aligned, text columns left-aligned."""
    def is_number(text):
        try:
            float(text)
            return True
        except ValueError:
            return text == "-"

    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[j]) for r in cells) for j in range(len(headers))]
    numeric = [all(is_number(r[j]) for r in cells[1:]) for j in range(len(headers))]

    def line(r):
        return "  ".join(c.rjust(w) if num else c.ljust(w)
                         for c, w, num in zip(r, widths, numeric)).rstrip()

    return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths)] + [line(r) for r in cells[1:]])
