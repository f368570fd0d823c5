"""`python -m codetask_operator.cli`."""

from codetask_operator.cli.main import main

main()
