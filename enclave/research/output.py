"""A checked output: result, per-cell outcomes, reasons, and the record that makes it re-checkable."""

from __future__ import annotations

import html
import json

import polars as pl

from enclave.io.outputs.cells import cell_label
from enclave.io.outputs.layout import MISSING, NO_VALUE, WITHHELD, display_frame, publishable_csv

COLOURS = {"pass": "#1a7f37", "review": "#9a6700", "fail": "#cf222e"}
#: rows of the result a notebook shows (the whole result is ``out.result``)
SHOWN_ROWS = 200


class Output:
    """What ``crosstab``, ``pivot_table``, ``ols`` … return.

    ``result`` is the publishable result (polars; suppressed values are null, as are values that
    do not exist; ``table()`` shows them apart: ``withheld`` and ``(missing)``), ``status`` is
    ``pass`` / ``review`` / ``fail`` (fail: some cell failed a rule and is suppressed in
    ``result``; review: a steward must look, e.g. class disclosure, a custom file or a
    differencing hit), ``cells`` the per-cell outcomes and ``reasons`` plain-language reasons.
    ``record`` is the JSON-ready record the airlock re-checks (it holds no patient-level values).
    """

    def __init__(self, record: dict, result: pl.DataFrame | None,
                 files: dict[str, bytes] | None = None, settings=None):
        self.record = record
        self.result = result
        self._files = files
        self.settings = settings  # of the workspace it was made in (home, user folder, policy)
        #: seconds spent making it, per step (compile, evaluate, ledger, record); not recorded
        self.timings: dict[str, float] = {}

    @property
    def output_id(self) -> str:
        return self.record["output_id"]

    @property
    def kind(self) -> str:
        return self.record["kind"]

    @property
    def ledger_hits(self) -> list[dict]:
        return self.record.get("ledger_hits", [])

    @property
    def status(self) -> str:
        status = self.record["status"]
        if status == "pass" and self.ledger_hits:
            return "review"
        return status

    @property
    def reasons(self) -> list[str]:
        return list(self.record.get("reasons", [])) + [h["message"] for h in self.ledger_hits]

    @property
    def cells(self) -> pl.DataFrame:
        rows = [{"cell": cell_label(c["cell"]), "statistic": c["statistic"],
                 "outcome": c["outcome"], "value": c["value"] if isinstance(
                     c["value"], (int, float)) and not isinstance(c["value"], bool) else None,
                 "reasons": c["reasons"]} for c in self.record.get("cells", [])]
        return pl.DataFrame(rows, schema={"cell": pl.String, "statistic": pl.String,
                                          "outcome": pl.String, "value": pl.Float64,
                                          "reasons": pl.List(pl.String)})

    def to_pandas(self):
        return None if self.result is None else self.result.to_pandas()

    def table(self) -> pl.DataFrame | None:
        """The result as a person reads it (text): ``withheld`` where the checks withheld a value,
        ``(missing)`` for a null group label, ``–`` for a value that does not exist."""
        if self.result is None:
            return None
        return display_frame(self.result, self.record.get("cells", []), self.record["spec"])

    def files(self) -> dict[str, bytes]:
        """The files an export of this output carries (the result as CSV, withheld values
        written ``withheld``; or the custom file)."""
        if self._files is not None:
            return dict(self._files)
        text = publishable_csv(self.result, self.record.get("cells", []), self.record["spec"])
        return {f"{self.kind}-{self.output_id[:8]}.csv": text.encode()}

    def __repr__(self) -> str:
        return (f"<Output {self.kind} {self.output_id[:8]} status={self.status} "
                f"cells={len(self.record.get('cells', []))}>")

    def _repr_html_(self) -> str:
        colour = COLOURS[self.status]
        cells = self.record.get("cells", [])
        counts = {s: sum(c["outcome"] == s for c in cells) for s in ("pass", "review", "fail")}
        reasons = "".join(f"<li>{html.escape(r)}</li>" for r in self.reasons[:20])
        more = (f"<li>… {len(self.reasons) - 20} more</li>" if len(self.reasons) > 20 else "")
        table = self._table_html() if self.result is not None else \
            f"<code>{html.escape(json.dumps(list((self._files or {}).keys())))}</code>"
        return (
            f'<div style="border-left:6px solid {colour};padding-left:8px">'
            f"<b>{html.escape(self.kind)}</b> · output <code>{self.output_id[:12]}</code> · "
            f'<span style="background:{colour};color:white;padding:1px 6px;border-radius:3px">'
            f"{self.status.upper()}</span> · cells: {counts['pass']} pass, {counts['review']} "
            f"review, {counts['fail']} fail (suppressed) · release "
            f"<code>{html.escape(str(self.record.get('release')))}</code> · policy "
            f"<code>{html.escape(str(self.record.get('policy', {}).get('name')))}</code>"
            f"<ul>{reasons}{more}</ul>{table}</div>"
        )

    def _table_html(self) -> str:
        shown = self.table()
        style = {WITHHELD: "color:#57606a;font-style:italic", MISSING: "color:#57606a",
                 NO_VALUE: "color:#57606a"}
        head = "".join(f"<th>{html.escape(c)}</th>" for c in shown.columns)
        body = []
        for row in shown.head(SHOWN_ROWS).iter_rows():
            tds = "".join((f'<td style="{style[v]}">' if v in style else "<td>") +
                          f"{html.escape(v)}</td>" for v in row)
            body.append(f"<tr>{tds}</tr>")
        more = (f"<div>… {shown.height - SHOWN_ROWS} more rows (all in <code>.result</code>)</div>"
                if shown.height > SHOWN_ROWS else "")
        legend = ""
        if any(WITHHELD in row for row in shown.iter_rows()):
            legend = (f"<div><i>{WITHHELD}</i>: suppressed by the disclosure checks (the value "
                      "exists but may not be shown)</div>")
        return (f'<table class="dataframe"><thead><tr>{head}</tr></thead>'
                f"<tbody>{''.join(body)}</tbody></table>{more}{legend}")
