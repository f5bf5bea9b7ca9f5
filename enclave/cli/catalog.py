"""``enclave catalog``: the classification of every store column (category, level, role)."""

from __future__ import annotations

import json

import click

from enclave.cli._main import cli


@cli.command("catalog")
@click.option("--table", "tables", multiple=True, metavar="TABLE",
              help="Show only this OMOP table (repeatable; default: every table of the store).")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON (one object per table).")
def catalog_cmd(tables: tuple[str, ...], as_json: bool) -> None:
    """Per table: its columns with category, level and identifier role, and the table's level.

    A dataset takes the level of its most sensitive column; a column without a classification
    cannot enter any release.
    """
    from enclave.core.errors import BadInputError
    from enclave.core.model.catalog import catalog, dataset_level
    from enclave.core.model.omop import CDM_TABLES

    unknown = [t for t in tables if t not in CDM_TABLES]
    if unknown:
        raise BadInputError(
            f"unknown table(s) {', '.join(unknown)} (known: {', '.join(CDM_TABLES)})"
        )
    classes = catalog()
    chosen = [t for t in CDM_TABLES if not tables or t in tables]
    out = []
    for t in chosen:
        cols = classes.get(t, ())
        out.append({
            "table": t,
            "level": int(dataset_level(cols)) if cols else None,
            "columns": [c.as_dict() for c in cols],
        })
    if as_json:
        click.echo(json.dumps({"tables": out}, ensure_ascii=False, indent=2))
        return
    for entry in out:
        level = entry["level"] if entry["level"] is not None else "unclassified"
        click.echo(f"{entry['table']} (level {level})")
        for c in entry["columns"]:
            flag = "  free text" if c["free_text"] else ""
            click.echo(f"  {c['column']:32s} {c['category']:20s} {c['level']}  "
                       f"{c['role']:20s} {c['kind']:6s}{flag}")
