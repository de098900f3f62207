"""Plotly figures as plain dicts (the plotly.js JSON schema), built on the server.

Plain dicts keep a page render in the low milliseconds (plotly.graph_objects validates every
attribute, which costs more than the queries behind a dashboard). The browser draws them with
the plotly.js that the plotly package ships (see portal/web/staticfiles.py).

Money is Decimal everywhere else; here, and only here, it becomes a float, because a chart is
a picture of the numbers, not a record of them.
"""

from decimal import Decimal

from django.utils.translation import gettext as _

PALETTE = {
    "input": "#2563eb",
    "cached": "#93c5fd",
    "output": "#f59e0b",
    "cost": "#10b981",
    "requests": "#8b5cf6",
    "bar": "#2563eb",
}
# Days as 11-23 (no month names: the same in every language), full dates on hover.
DAY_AXIS = {"gridcolor": "#eef0f3", "type": "date", "tickformat": "%m-%d", "hoverformat": "%Y-%m-%d"}
FONT = '-apple-system, "Segoe UI", Roboto, "PingFang SC", "Microsoft YaHei", "Noto Sans CJK SC", sans-serif'


def _float(amount: Decimal) -> float:
    return float(round(amount, 6))


def _layout(**extra) -> dict:
    layout = {
        "margin": {"l": 56, "r": 16, "t": 8, "b": 40},
        "paper_bgcolor": "rgba(0,0,0,0)",
        "plot_bgcolor": "rgba(0,0,0,0)",
        "font": {"family": FONT, "size": 12, "color": "#1f2933"},
        "hovermode": "x unified",
        "legend": {"orientation": "h", "y": -0.18, "traceorder": "normal"},
        "xaxis": DAY_AXIS,
        "yaxis": {"gridcolor": "#eef0f3", "rangemode": "tozero"},
        "height": 300,
    }
    layout.update(extra)
    return layout


def daily_tokens(series: list[dict]) -> dict:
    """Stacked bars: uncached input + cached input + output = all tokens of the day.

    input_tokens already includes the cached tokens (OpenAI's convention), so the cached part
    is taken out of the input bar to keep the stack honest.
    """
    days = [row["day"].isoformat() for row in series]
    uncached = [row["input_tokens"] - row["cached_input_tokens"] for row in series]
    return {
        "data": [
            {
                "type": "bar",
                "name": _("Input"),
                "x": days,
                "y": uncached,
                "marker": {"color": PALETTE["input"]},
                "meta": "input",
            },
            {
                "type": "bar",
                "name": _("Cached input"),
                "x": days,
                "y": [row["cached_input_tokens"] for row in series],
                "marker": {"color": PALETTE["cached"]},
                "meta": "cached",
            },
            {
                "type": "bar",
                "name": _("Output"),
                "x": days,
                "y": [row["output_tokens"] for row in series],
                "marker": {"color": PALETTE["output"]},
                "meta": "output",
            },
        ],
        "layout": _layout(barmode="stack", yaxis={"gridcolor": "#eef0f3", "title": {"text": _("Tokens")}}),
    }


def daily_cost(series: list[dict], currency: str) -> dict:
    return {
        "data": [
            {
                "type": "bar",
                "name": _("Cost"),
                "x": [row["day"].isoformat() for row in series],
                "y": [_float(row["cost"]) for row in series],
                "marker": {"color": PALETTE["cost"]},
                "hovertemplate": "%{y:,.4f} " + currency + "<extra></extra>",
                "meta": "cost",
            }
        ],
        "layout": _layout(yaxis={"gridcolor": "#eef0f3", "title": {"text": currency}, "rangemode": "tozero"}),
    }


def daily_requests(series: list[dict]) -> dict:
    return {
        "data": [
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": _("Requests"),
                "x": [row["day"].isoformat() for row in series],
                "y": [row["requests"] for row in series],
                "line": {"color": PALETTE["requests"], "width": 2},
                "fill": "tozeroy",
                "fillcolor": "rgba(139,92,246,0.12)",
                "meta": "requests",
            }
        ],
        "layout": _layout(yaxis={"gridcolor": "#eef0f3", "title": {"text": _("Requests")}, "rangemode": "tozero"}),
    }


def top_groups(rows: list[dict], labels: dict, currency: str, limit: int = 8) -> dict:
    """Horizontal bars of the largest groups, with buttons to rank by tokens or by cost."""
    by_tokens = sorted(rows, key=lambda row: -row["tokens"])[:limit]
    by_cost = sorted(rows, key=lambda row: -row["cost"])[:limit]

    def names(ranked: list[dict]) -> list[str]:
        # Reversed so that the largest bar sits on top.
        return [str(labels.get(row["group"], row["group"])) for row in reversed(ranked)]

    data = [
        {
            "type": "bar",
            "orientation": "h",
            "name": _("Tokens"),
            "x": [row["tokens"] for row in reversed(by_tokens)],
            "y": names(by_tokens),
            "marker": {"color": PALETTE["bar"]},
            "hovertemplate": "%{y}: %{x:,} " + _("tokens") + "<extra></extra>",
            "meta": "tokens",
            "visible": True,
        },
        {
            "type": "bar",
            "orientation": "h",
            "name": _("Cost"),
            "x": [_float(row["cost"]) for row in reversed(by_cost)],
            "y": names(by_cost),
            "marker": {"color": PALETTE["cost"]},
            "hovertemplate": "%{y}: %{x:,.4f} " + currency + "<extra></extra>",
            "meta": "cost",
            "visible": False,
        },
    ]
    buttons = [
        {"label": _("By tokens"), "method": "update", "args": [{"visible": [True, False]}]},
        {"label": _("By cost"), "method": "update", "args": [{"visible": [False, True]}]},
    ]
    layout = _layout(
        hovermode="closest",
        showlegend=False,
        margin={"l": 140, "r": 16, "t": 36, "b": 32},
        height=max(220, 60 + 28 * max(len(by_tokens), 1)),
        yaxis={"automargin": True},
        xaxis={"gridcolor": "#eef0f3", "rangemode": "tozero"},
        updatemenus=[
            {
                "type": "buttons",
                "direction": "right",
                "x": 0,
                "xanchor": "left",
                "y": 1.02,
                "yanchor": "bottom",
                "showactive": True,
                "buttons": buttons,
                "bgcolor": "#f5f7fa",
                "bordercolor": "#e4e7eb",
                "font": {"size": 11},
            }
        ],
    )
    return {"data": data, "layout": layout}


def quota_gauge(*, used: Decimal, limit: Decimal, title: str) -> dict:
    """A gauge from 0 to the limit; amber from 80 %, red from 100 % (the default alert steps)."""
    top = _float(limit) if limit > 0 else 1.0
    return {
        "data": [
            {
                "type": "indicator",
                "mode": "gauge+number",
                "value": _float(used),
                "number": {"valueformat": ",.4~f"},
                "title": {"text": title, "font": {"size": 13}},
                "gauge": {
                    "axis": {"range": [0, top]},
                    "bar": {"color": "#2563eb" if used < limit * Decimal("0.8") else "#b45309"},
                    "steps": [
                        {"range": [0, top * 0.8], "color": "#eef2ff"},
                        {"range": [top * 0.8, top], "color": "#fef3c7"},
                    ],
                    "threshold": {"line": {"color": "#b91c1c", "width": 3}, "value": top, "thickness": 0.8},
                },
            }
        ],
        "layout": _layout(height=200, margin={"l": 24, "r": 24, "t": 48, "b": 8}),
    }


def top_tenants(rows: list[dict], labels: dict, *, metric: str, currency_label: str = "") -> dict:
    ranked = list(reversed(rows))
    is_cost = metric == "cost"
    return {
        "data": [
            {
                "type": "bar",
                "orientation": "h",
                "name": _("Cost") if is_cost else _("Tokens"),
                "x": [_float(row["cost"]) if is_cost else row["tokens"] for row in ranked],
                "y": [str(labels.get(row["group"], row["group"])) for row in ranked],
                "marker": {"color": PALETTE["cost" if is_cost else "bar"]},
                "meta": metric,
            }
        ],
        "layout": _layout(
            hovermode="closest",
            showlegend=False,
            margin={"l": 140, "r": 16, "t": 8, "b": 32},
            height=max(220, 40 + 28 * max(len(rows), 1)),
            yaxis={"automargin": True},
            xaxis={"gridcolor": "#eef0f3", "title": {"text": currency_label}, "rangemode": "tozero"},
        ),
    }
