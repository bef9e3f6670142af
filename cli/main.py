"""Entry point of the ``registry`` console script."""

from cli import versions as _versions  # noqa: F401  (registers its commands)
from cli import inspection as _inspection  # noqa: F401  (diff, blame, audit)
from cli import deploy as _deploy  # noqa: F401  (registers its commands)
from cli.app import app


def main() -> None:
    app()


if __name__ == "__main__":
    main()
