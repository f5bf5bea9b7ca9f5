"""The ``enclave`` root command group, its context, and the entry point."""

from __future__ import annotations

import click

from enclave.core.errors import EnclaveError
from enclave.core.settings import Settings, load_settings


class _Ctx:
    def __init__(self, home: str | None):
        self.home = home

    @property
    def settings(self) -> Settings:
        return load_settings(self.home)


pass_ctx = click.make_pass_decorator(_Ctx)
#: the options many commands share
as_option = click.option("--as", "as_user", metavar="USER",
                         help="Act as this user (root only; default: the OS user).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print as JSON.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    # not readable=True: the service users only traverse the home (0711), never list it
    type=click.Path(file_okay=False, readable=False, path_type=str),
    envvar="ENCLAVE_HOME",
    help="The enclave's data root (default: $ENCLAVE_HOME or ~/.local/share/enclave); its Unix "
         "users, groups, nftables table and ports derive from it too ('enclave status').",
)
@click.version_option(package_name="emr-enclave")
@click.pass_context
def cli(ctx: click.Context, home: str | None) -> None:
    """A research data enclave for electronic medical records."""
    ctx.obj = _Ctx(home)


def main(argv: list[str] | None = None) -> int:
    try:
        cli.main(args=argv, standalone_mode=False, prog_name="enclave")
    except EnclaveError as exc:
        click.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    return 0


