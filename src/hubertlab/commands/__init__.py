"""One module per `hubertlab` subcommand: `add_arguments(parser)` and `run(args) -> int`.
They only parse arguments and call the library; the work lives in the stage packages."""
