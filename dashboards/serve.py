"""Serve the dashboards: ``python -m dashboards.serve [streamlit options]``.

The same as ``streamlit run dashboards/app.py [options]``, except that the app's modules (pandas,
polars, DuckDB, pyarrow, about 2 s on a 2-core machine) are imported before the server starts
listening. Streamlit runs the page scripts in this process, so the first visitor after a
(re)start no longer waits for those imports. The hub starts the dashboards service this way.
"""

from __future__ import annotations

import sys
from pathlib import Path

APP = Path(__file__).with_name("app.py")


def main(argv: list[str] | None = None) -> None:
    from streamlit.web import cli

    import dashboards.common
    import dashboards.data  # noqa: F401 - imported here for the first visitor, see above

    sys.argv = ["streamlit", "run", str(APP), *(sys.argv[1:] if argv is None else argv)]
    cli.main()


if __name__ == "__main__":
    main()
