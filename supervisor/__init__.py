"""jobvisor runtime: the supervisor, its child workers, the embedded server and the CLI."""
