"""The work of the "transform" handler, shared by the Ignis and functions-framework entry points.

An order of line items in, a summary out: about 1.2 KB of JSON parsed, a few hundred bytes back.
"""


def summarize(order):
    items = order.get("items", [])
    total = sum(item["price"] * item["qty"] for item in items)
    biggest = max(items, key=lambda item: item["price"] * item["qty"], default=None)
    return {
        "order": order.get("id"),
        "currency": order.get("currency", "EUR"),
        "lines": len(items),
        "units": sum(item["qty"] for item in items),
        "total": round(total, 2),
        "skus": sorted(item["sku"].upper() for item in items),
        "biggest": biggest["name"] if biggest else None,
    }
