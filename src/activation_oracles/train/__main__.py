"""`python -m activation_oracles.train CONFIG [options]`: the `ao train` command, for
`accelerate launch -m activation_oracles.train ...` and `torchrun -m activation_oracles.train ...`."""

import typer

from ..cliargs import command_boundary
from .cli import train_command


def main() -> None:
    typer.run(command_boundary(train_command))


if __name__ == "__main__":
    main()
